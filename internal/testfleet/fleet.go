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
	// Uniform makes every cluster alike: kube-apiserver CurrentVersion with watch-list on,
	// one etcd. By default the fleet is mixed, so that the tests and the demo meet more than
	// one kind of cluster (see MixedOldIndex and MixedSplitIndex):
	//   - the cluster at MixedOldIndex (the third, "charlie") runs the older kube-apiserver
	//     OldVersion with --feature-gates=WatchList=false: it refuses watch-list streams
	//     (sendInitialEvents), so client-go informers fall back to LIST then WATCH, as
	//     they do against any apiserver before 1.32 or with the gate off;
	//   - the cluster at MixedSplitIndex (the second, "bravo") keeps its ConfigMaps on a
	//     second etcd of its own (--etcd-servers-overrides): their resourceVersions are a
	//     sequence separate from the rest of that cluster's, as in clusters that put busy
	//     resources on a dedicated etcd.
	// The first cluster ("alpha"), the victim of the fault tests, stays plain. A fleet
	// of fewer clusters has only the positions it has.
	Uniform bool
	// BinDir holds etcd, kube-apiserver and, for a mixed fleet, OldAPIServer.
	// Default: $FLEETCACHE_BIN.
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

// The kube-apiservers hack/build-bins.sh builds: keep these in step with it.
const (
	// CurrentVersion is what kube-apiserver reports in /version.
	CurrentVersion = "v1.37.2"
	// OldVersion is what OldAPIServer reports: the older minor of the mixed fleet.
	OldVersion = "v1.32.13"
	// OldAPIServer is the older kube-apiserver's file name in BinDir.
	OldAPIServer = "kube-apiserver-1.32"
)

// Positions of the clusters of a mixed fleet (Options.Uniform false) that differ from the
// others.
const (
	// MixedSplitIndex is the cluster whose ConfigMaps live on a second etcd.
	MixedSplitIndex = 1
	// MixedOldIndex is the cluster that runs OldAPIServer with watch-list off.
	MixedOldIndex = 2
)

// oldFeatureGates turns watch-list off on the old cluster (the gate exists from 1.27 and
// is on by default from 1.32).
const oldFeatureGates = "WatchList=false"

// Layout is the version of fleet.json's layout this package writes: 1 (a file without
// a layout) had every cluster alike; 2 records each cluster's apiserver binary, version,
// feature gates and second etcd. Up refuses a fleet of another layout (its folder must be
// destroyed and made again); Open loads any, so that its processes can still be stopped.
const Layout = 2

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
	// Layout is the layout of the fleet's fleet.json (see the constant Layout): an older
	// one was loaded by Open to be stopped or destroyed, and Up refuses it.
	Layout int
}

type state struct {
	// Layout is absent (0) in files of layout 1.
	Layout   int            `json:"layout,omitempty"`
	Clusters []clusterState `json:"clusters"`
}

func (st state) layout() int {
	if st.Layout == 0 {
		return 1
	}
	return st.Layout
}

type clusterState struct {
	Name     string `json:"name"`
	APIPort  int    `json:"apiPort"`
	EtcdPort int    `json:"etcdPort"`
	PeerPort int    `json:"peerPort"`
	clusterSpec
}

// clusterSpec is what makes a cluster differ from the others.
type clusterSpec struct {
	// APIServer is the kube-apiserver binary's file name in BinDir.
	APIServer string `json:"apiServer,omitempty"`
	// Version is the gitVersion it reports.
	Version string `json:"version,omitempty"`
	// FeatureGates is its --feature-gates; empty: the version's defaults.
	FeatureGates string `json:"featureGates,omitempty"`
	// ConfigMapsEtcdPort and ConfigMapsPeerPort are the ports of the second etcd that
	// keeps the cluster's ConfigMaps; 0 when they are on the main etcd.
	ConfigMapsEtcdPort int `json:"configMapsEtcdPort,omitempty"`
	ConfigMapsPeerPort int `json:"configMapsPeerPort,omitempty"`
}

// specFor is the spec Up gives a new cluster at index; ports are picked once, here.
func specFor(index int, opts Options) (clusterSpec, error) {
	sp := clusterSpec{APIServer: "kube-apiserver", Version: CurrentVersion}
	if opts.Uniform {
		return sp, nil
	}
	switch index {
	case MixedOldIndex:
		sp.APIServer, sp.Version, sp.FeatureGates = OldAPIServer, OldVersion, oldFeatureGates
	case MixedSplitIndex:
		ports, err := freePorts(2)
		if err != nil {
			return sp, err
		}
		sp.ConfigMapsEtcdPort, sp.ConfigMapsPeerPort = ports[0], ports[1]
	}
	return sp, nil
}

// describe says what a spec is, for errors and status.
func (sp clusterSpec) describe() string {
	s := sp.APIServer + " " + sp.Version
	if sp.FeatureGates != "" {
		s += " --feature-gates=" + sp.FeatureGates
	}
	if sp.ConfigMapsEtcdPort != 0 {
		s += ", configmaps on a second etcd"
	} else {
		s += ", one etcd"
	}
	return s
}

// sameKind reports whether two specs make the same kind of cluster (ports aside).
func (sp clusterSpec) sameKind(o clusterSpec) bool {
	return sp.APIServer == o.APIServer && sp.Version == o.Version && sp.FeatureGates == o.FeatureGates &&
		(sp.ConfigMapsEtcdPort != 0) == (o.ConfigMapsEtcdPort != 0)
}

// ErrLayout is returned (wrapped) by Up for a fleet folder made with another layout or
// other options: it is refused as it is, not changed under its data.
var ErrLayout = errors.New("testfleet: the fleet folder was made differently")

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
	if err := checkLayout(statePath, st, opts); err != nil {
		return nil, err
	}
	for i := len(st.Clusters); i < opts.Clusters; i++ {
		ports, err := freePorts(3)
		if err != nil {
			return nil, err
		}
		sp, err := specFor(i, opts)
		if err != nil {
			return nil, err
		}
		st.Clusters = append(st.Clusters, clusterState{Name: clusterName(i), APIPort: ports[0], EtcdPort: ports[1], PeerPort: ports[2], clusterSpec: sp})
	}
	st.Layout = Layout
	for _, cs := range st.Clusters {
		if _, err := os.Stat(filepath.Join(opts.BinDir, cs.APIServer)); err != nil {
			return nil, fmt.Errorf("testfleet: cluster %s runs %s: %w (run hack/build-bins.sh)", cs.Name, cs.APIServer, err)
		}
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

// checkLayout refuses to start a recorded fleet that this package would not make the same
// way: one of an older layout, or whose clusters differ from what opts ask for.
func checkLayout(path string, st state, opts Options) error {
	if len(st.Clusters) == 0 {
		return nil
	}
	fix := fmt.Sprintf("stop and delete it with `FLEET_DIR=%s hack/fleet.sh destroy` (its data goes), then start again", filepath.Dir(path))
	if st.layout() != Layout {
		return fmt.Errorf("%w: %s has layout %d (every cluster kube-apiserver on one etcd, before the mixed fleet); this version makes layout %d (a mixed fleet: see testfleet.Options): %s",
			ErrLayout, path, st.layout(), Layout, fix)
	}
	for i, cs := range st.Clusters {
		want, err := specFor(i, opts)
		if err != nil {
			return err
		}
		if !cs.sameKind(want) {
			return fmt.Errorf("%w: %s: cluster %s is %s, the options ask for %s: %s", ErrLayout, path, cs.Name, cs.describe(), want.describe(), fix)
		}
	}
	return nil
}

func load(opts Options, st state) (*Fleet, error) {
	f := &Fleet{Dir: opts.Dir, Kubeconfig: filepath.Join(opts.Dir, "kubeconfig"), Layout: st.layout()}
	for i, cs := range st.Clusters {
		if cs.APIServer == "" { // layout 1
			cs.APIServer, cs.Version = "kube-apiserver", CurrentVersion
		}
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
			Version: cs.Version, FeatureGates: cs.FeatureGates,
			ConfigMapsEtcdPort: cs.ConfigMapsEtcdPort, ConfigMapsPeerPort: cs.ConfigMapsPeerPort,
			creds: creds, readyTimeout: opts.ReadyTimeout,
		}
		c.etcd = &proc{
			bin: filepath.Join(opts.BinDir, "etcd"), args: etcdArgs(c.Name, filepath.Join(dir, "etcd"), c.EtcdPort, c.PeerPort), detach: opts.Detach,
			pidFile: filepath.Join(dir, "etcd.pid"), logFile: filepath.Join(dir, "etcd.log"),
		}
		if c.ConfigMapsEtcdPort != 0 {
			c.configMapsEtcd = &proc{
				bin:  filepath.Join(opts.BinDir, "etcd"),
				args: etcdArgs(c.Name+"-configmaps", filepath.Join(dir, "etcd-configmaps"), c.ConfigMapsEtcdPort, c.ConfigMapsPeerPort), detach: opts.Detach,
				pidFile: filepath.Join(dir, "etcd-configmaps.pid"), logFile: filepath.Join(dir, "etcd-configmaps.log"),
			}
		}
		c.apiserver = &proc{
			bin: filepath.Join(opts.BinDir, cs.APIServer), args: c.apiserverArgs(), detach: opts.Detach,
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
