package testfleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Options configures a fleet. The zero value of every field but Dir means "default".
type Options struct {
	// Dir holds the fleet's state: fleet.json, the kubeconfig, and one folder per cluster
	// with its PKI, etcd data, PID files and logs. Required.
	Dir string
	// Clusters is how many clusters Up makes sure exist. Default 3. A fleet that already
	// has more keeps them.
	Clusters int
	// BinDir holds etcd and kube-apiserver. Default: $FLEETCACHE_BIN.
	BinDir string
	// Detach lets the processes outlive the calling process (hack/fleet.sh). Otherwise
	// they are killed when it dies, however it dies.
	Detach bool
	// ReadyTimeout bounds each wait for an apiserver to become ready. Default 60s.
	ReadyTimeout time.Duration
}

func (o *Options) setDefaults() error {
	if o.Dir == "" {
		return errors.New("testfleet: Options.Dir is required")
	}
	if o.Clusters == 0 {
		o.Clusters = 3
	}
	if o.BinDir == "" {
		o.BinDir = os.Getenv("FLEETCACHE_BIN")
	}
	if o.BinDir == "" {
		return errors.New("testfleet: no binaries: set FLEETCACHE_BIN to the folder hack/build-bins.sh prints")
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil {
			return fmt.Errorf("testfleet: %w (run hack/build-bins.sh)", err)
		}
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	return nil
}

// Names are the cluster names, in order; a fleet larger than this list uses "cN".
var Names = []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett"}

func clusterName(i int) string {
	if i < len(Names) {
		return Names[i]
	}
	return "c" + strconv.Itoa(i+1)
}

// Fleet is a set of clusters sharing a state folder and a kubeconfig.
type Fleet struct {
	Dir string
	// Kubeconfig has a context per cluster (admin) and a "<name>-reader" context per
	// cluster (the read-only user). The current context is the first cluster.
	Kubeconfig string
	Clusters   []*Cluster
}

type state struct {
	Clusters []clusterState `json:"clusters"`
}

type clusterState struct {
	Name     string `json:"name"`
	APIPort  int    `json:"apiPort"`
	EtcdPort int    `json:"etcdPort"`
	PeerPort int    `json:"peerPort"`
}

// Open loads the fleet recorded in opts.Dir without starting anything.
func Open(opts Options) (*Fleet, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	var st state
	raw, err := os.ReadFile(filepath.Join(opts.Dir, "fleet.json"))
	if err != nil {
		return nil, fmt.Errorf("no fleet in %s: %w", opts.Dir, err)
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(opts.Dir, "fleet.json"), err)
	}
	return load(opts, st)
}

// Up creates the fleet if needed (ports are picked once and kept), starts every process
// that is not running, waits until every apiserver is ready, and writes the kubeconfig.
// Clusters start in parallel; the error names every cluster that failed.
func Up(ctx context.Context, opts Options) (*Fleet, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	var st state
	statePath := filepath.Join(opts.Dir, "fleet.json")
	if raw, err := os.ReadFile(statePath); err == nil {
		if err := json.Unmarshal(raw, &st); err != nil {
			return nil, fmt.Errorf("read %s: %w", statePath, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for i := len(st.Clusters); i < opts.Clusters; i++ {
		ports, err := freePorts(3)
		if err != nil {
			return nil, err
		}
		st.Clusters = append(st.Clusters, clusterState{Name: clusterName(i), APIPort: ports[0], EtcdPort: ports[1], PeerPort: ports[2]})
	}
	raw, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(statePath, raw, 0o644); err != nil {
		return nil, err
	}
	f, err := load(opts, st)
	if err != nil {
		return nil, err
	}
	if err := f.writeKubeconfig(); err != nil {
		return nil, err
	}
	if err := f.each(func(c *Cluster) error { return c.Start(ctx) }); err != nil {
		return f, err
	}
	return f, nil
}

func load(opts Options, st state) (*Fleet, error) {
	f := &Fleet{Dir: opts.Dir, Kubeconfig: filepath.Join(opts.Dir, "kubeconfig")}
	for i, cs := range st.Clusters {
		dir := filepath.Join(opts.Dir, cs.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		creds, err := ensureCredentials(dir)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", cs.Name, err)
		}
		c := &Cluster{
			Name: cs.Name, Index: i, Dir: dir,
			APIPort: cs.APIPort, EtcdPort: cs.EtcdPort, PeerPort: cs.PeerPort,
			creds: creds, readyTimeout: opts.ReadyTimeout,
		}
		c.etcd = &proc{
			bin: filepath.Join(opts.BinDir, "etcd"), args: c.etcdArgs(), detach: opts.Detach,
			pidFile: filepath.Join(dir, "etcd.pid"), logFile: filepath.Join(dir, "etcd.log"),
		}
		c.apiserver = &proc{
			bin: filepath.Join(opts.BinDir, "kube-apiserver"), args: c.apiserverArgs(), detach: opts.Detach,
			pidFile: filepath.Join(dir, "kube-apiserver.pid"), logFile: filepath.Join(dir, "kube-apiserver.log"),
		}
		f.Clusters = append(f.Clusters, c)
	}
	return f, nil
}

// Cluster returns the named cluster.
func (f *Fleet) Cluster(name string) (*Cluster, error) {
	for _, c := range f.Clusters {
		if c.Name == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("no cluster %q in the fleet at %s", name, f.Dir)
}

// Down kills every process of the fleet. State and data stay in Dir.
func (f *Fleet) Down() error {
	return f.each(func(c *Cluster) error { return c.Down() })
}

// each runs fn for every cluster in parallel and aggregates the errors.
func (f *Fleet) each(fn func(*Cluster) error) error {
	var (
		mu   sync.Mutex
		errs *multierror.Error
		wg   sync.WaitGroup
	)
	for _, c := range f.Clusters {
		wg.Go(func() {
			if err := fn(c); err != nil {
				mu.Lock()
				errs = multierror.Append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errs.ErrorOrNil()
}

func (f *Fleet) writeKubeconfig() error {
	cfg := clientcmdapi.NewConfig()
	for _, c := range f.Clusters {
		cfg.Clusters[c.Name] = &clientcmdapi.Cluster{Server: c.Server(), CertificateAuthorityData: c.CAData()}
		cfg.AuthInfos[c.Name+"-admin"] = &clientcmdapi.AuthInfo{Token: c.AdminToken()}
		cfg.AuthInfos[c.Name+"-reader"] = &clientcmdapi.AuthInfo{Token: c.ReaderToken()}
		cfg.Contexts[c.Name] = &clientcmdapi.Context{Cluster: c.Name, AuthInfo: c.Name + "-admin"}
		cfg.Contexts[c.Name+"-reader"] = &clientcmdapi.Context{Cluster: c.Name, AuthInfo: c.Name + "-reader"}
	}
	if len(f.Clusters) > 0 {
		cfg.CurrentContext = f.Clusters[0].Name
	}
	return clientcmd.WriteToFile(*cfg, f.Kubeconfig)
}

// freePorts asks the kernel for n distinct free loopback ports. They are free when
// returned, not reserved; Up records them once, so a fleet keeps its ports.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// WriteManyContexts writes a kubeconfig with n contexts named ctx-0001 ... spread round
// robin over the fleet's apiservers, each with its own cluster and user entry (the
// cluster's read-only token), for tests and benchmarks of large fleets. To fleetcache
// every context is a cluster of its own: its own client, connection, discovery and
// informers, as with distinct clusters.
func (f *Fleet) WriteManyContexts(path string, n int) error {
	if len(f.Clusters) == 0 {
		return errors.New("testfleet: the fleet has no clusters")
	}
	cfg := clientcmdapi.NewConfig()
	for i := range n {
		c := f.Clusters[i%len(f.Clusters)]
		name := fmt.Sprintf("ctx-%04d", i+1)
		cfg.Clusters[name] = &clientcmdapi.Cluster{Server: c.Server(), CertificateAuthorityData: c.CAData()}
		cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: c.ReaderToken()}
		cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	}
	return clientcmd.WriteToFile(*cfg, path)
}
