package testfleet

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-multierror"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Cluster is one control plane of the fleet: an etcd and a kube-apiserver on loopback (and,
// in one cluster of a mixed fleet, a second etcd for its ConfigMaps).
// Its methods are safe to call from one goroutine at a time.
type Cluster struct {
	Name     string
	Index    int // position in the fleet, 0-based; Plan uses it to vary the inventory
	Dir      string
	APIPort  int
	EtcdPort int
	PeerPort int
	// Version is the gitVersion the apiserver reports in /version (CurrentVersion or
	// OldVersion).
	Version string
	// FeatureGates is the apiserver's --feature-gates; empty: its version's defaults.
	FeatureGates string
	// ConfigMapsEtcdPort and ConfigMapsPeerPort are the ports of the second etcd that
	// keeps the cluster's ConfigMaps (--etcd-servers-overrides); 0 when there is none.
	ConfigMapsEtcdPort int
	ConfigMapsPeerPort int

	creds          *credentials
	apiserver      *proc
	etcd           *proc
	configMapsEtcd *proc // nil unless ConfigMapsEtcdPort
	readyTimeout   time.Duration
}

// WatchList reports whether the apiserver serves watch-list streams (sendInitialEvents):
// false on the mixed fleet's old cluster, whose informers take the LIST path.
func (c *Cluster) WatchList() bool {
	return !strings.Contains(c.FeatureGates, "WatchList=false")
}

// ConfigMapsOnSecondEtcd reports whether the cluster's ConfigMaps live on an etcd of their
// own, with a revision sequence separate from the rest of the cluster's.
func (c *Cluster) ConfigMapsOnSecondEtcd() bool { return c.configMapsEtcd != nil }

// etcds are the cluster's etcd processes, the main one first.
func (c *Cluster) etcds() []*proc {
	if c.configMapsEtcd != nil {
		return []*proc{c.etcd, c.configMapsEtcd}
	}
	return []*proc{c.etcd}
}

// ReaderClusterRole is the get/list/watch ClusterRole bound to ReaderUser in every cluster.
const ReaderClusterRole = "fleetcache:reader"

// Server is the apiserver's URL.
func (c *Cluster) Server() string { return "https://127.0.0.1:" + strconv.Itoa(c.APIPort) }

// AdminToken and ReaderToken are the cluster's static bearer tokens.
func (c *Cluster) AdminToken() string  { return c.creds.AdminToken }
func (c *Cluster) ReaderToken() string { return c.creds.ReaderToken }

// CAData is the PEM bundle that verifies the apiserver's serving certificate.
func (c *Cluster) CAData() []byte { return c.creds.CAData }

// AdminConfig and ReaderConfig return a new rest.Config for the cluster's admin or
// read-only user. Callers may modify the copy they get.
func (c *Cluster) AdminConfig() *rest.Config  { return c.restConfig(c.creds.AdminToken) }
func (c *Cluster) ReaderConfig() *rest.Config { return c.restConfig(c.creds.ReaderToken) }

func (c *Cluster) restConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            c.Server(),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.creds.CAData},
		QPS:             500,
		Burst:           1000,
	}
}

func (c *Cluster) apiserverArgs() []string {
	pki := filepath.Join(c.Dir, "pki")
	args := []string{
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(c.EtcdPort),
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(c.APIPort),
		// 127.0.0.1 is only accepted as the advertised address without the endpoint
		// reconciler, which we do not need: nothing runs inside these clusters.
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		"--cert-dir=" + pki,
		"--tls-cert-file=" + c.creds.servingCert,
		"--tls-private-key-file=" + c.creds.servingKey,
		"--token-auth-file=" + c.creds.tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + c.creds.saKey,
		"--service-account-signing-key-file=" + c.creds.saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--allow-privileged=true",
		"--profiling=false",
	}
	if c.FeatureGates != "" {
		args = append(args, "--feature-gates="+c.FeatureGates)
	}
	if c.ConfigMapsEtcdPort != 0 {
		// group/resource#servers; the core group is empty.
		args = append(args, "--etcd-servers-overrides=/configmaps#http://127.0.0.1:"+strconv.Itoa(c.ConfigMapsEtcdPort))
	}
	return args
}

func etcdArgs(name, dataDir string, clientPort, peerPort int) []string {
	client := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peer := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	return []string{
		"--name=" + name,
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=" + name + "=" + peer,
		// Test data: a killed process keeps its writes in the page cache, and skipping
		// fsync makes seeding several times faster.
		"--unsafe-no-fsync",
		"--log-level=warn",
	}
}

// Start starts whichever of its etcds and kube-apiserver is not running, then waits until
// the apiserver is ready and the reader's RBAC is in place.
func (c *Cluster) Start(ctx context.Context) error {
	if err := c.startProcesses(ctx); err != nil {
		return err
	}
	return c.ensureReaderRBAC(ctx)
}

// startProcesses starts whichever of its etcds and kube-apiserver is not running and
// waits until the apiserver is ready.
func (c *Cluster) startProcesses(ctx context.Context) error {
	for _, e := range c.etcds() {
		if _, ok := e.pid(); !ok {
			if err := e.start(); err != nil {
				return fmt.Errorf("cluster %s: %w", c.Name, err)
			}
		}
	}
	if _, ok := c.apiserver.pid(); !ok {
		if err := c.apiserver.start(); err != nil {
			return fmt.Errorf("cluster %s: %w", c.Name, err)
		}
	}
	return c.WaitReady(ctx)
}

// WaitReady polls /readyz until it answers ok or the ready timeout passes.
func (c *Cluster) WaitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.readyTimeout)
	defer cancel()
	cfg := c.AdminConfig()
	cfg.Timeout = 2 * time.Second // a stopped apiserver hangs; never wait on one call
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	var last error
	for {
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			return nil
		}
		last = err
		if c.apiserver.exitedSinceStart() {
			return fmt.Errorf("cluster %s: kube-apiserver exited; see %s", c.Name, c.apiserver.logFile)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster %s not ready after %s (last error: %v); see %s", c.Name, c.readyTimeout, last, c.apiserver.logFile)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cluster) ensureReaderRBAC(ctx context.Context) error {
	client, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return err
	}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: ReaderClusterRole},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"get", "list", "watch"}},
			{NonResourceURLs: []string{"*"}, Verbs: []string{"get"}},
		},
	}
	if _, err := client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("cluster %s: create ClusterRole: %w", c.Name, err)
	}
	return c.BindReader(ctx)
}

// BindReader (re)creates the ClusterRoleBinding that gives ReaderUser its read access.
func (c *Cluster) BindReader(ctx context.Context) error {
	client, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ReaderClusterRole},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ReaderClusterRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: ReaderUser}},
	}
	if _, err := client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("cluster %s: create ClusterRoleBinding: %w", c.Name, err)
	}
	return nil
}

// UnbindReader deletes the reader's ClusterRoleBinding: its reads turn Forbidden.
func (c *Cluster) UnbindReader(ctx context.Context) error {
	client, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return err
	}
	err = client.RbacV1().ClusterRoleBindings().Delete(ctx, ReaderClusterRole, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("cluster %s: delete ClusterRoleBinding: %w", c.Name, err)
	}
	return nil
}

// Stop freezes the apiserver with SIGSTOP: connections stay open and requests hang, as
// with a wedged or partitioned control plane.
func (c *Cluster) Stop() error { return c.wrap("stop", c.apiserver.signal(syscall.SIGSTOP)) }

// Cont resumes an apiserver frozen by Stop.
func (c *Cluster) Cont() error { return c.wrap("cont", c.apiserver.signal(syscall.SIGCONT)) }

// Kill SIGKILLs the apiserver; its etcd keeps running and keeps the data.
func (c *Cluster) Kill() error { return c.wrap("kill", c.apiserver.kill()) }

// Restart kills the apiserver (if running), starts it (and its etcds, if down) and
// waits until it is ready. It leaves RBAC as it is (a fault test may have unbound the
// reader).
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.Kill(); err != nil {
		return err
	}
	return c.startProcesses(ctx)
}

// KillEtcd SIGKILLs the cluster's (main) etcd: the apiserver stays up but its requests
// hang or fail and /readyz reports etcd failing.
func (c *Cluster) KillEtcd() error { return c.wrap("kill etcd", c.etcd.kill()) }

// StartEtcd starts the cluster's (main) etcd again after KillEtcd.
func (c *Cluster) StartEtcd() error {
	if _, ok := c.etcd.pid(); ok {
		return nil
	}
	return c.wrap("start etcd", c.etcd.start())
}

// errNoConfigMapsEtcd: the cluster keeps its ConfigMaps on its main etcd.
var errNoConfigMapsEtcd = errors.New("its ConfigMaps are on its main etcd: there is no second etcd")

// KillConfigMapsEtcd SIGKILLs the etcd that keeps the cluster's ConfigMaps: ConfigMap
// requests fail or hang, the other resources are served as before.
func (c *Cluster) KillConfigMapsEtcd() error {
	if c.configMapsEtcd == nil {
		return c.wrap("kill configmaps etcd", errNoConfigMapsEtcd)
	}
	return c.wrap("kill configmaps etcd", c.configMapsEtcd.kill())
}

// StartConfigMapsEtcd starts the ConfigMaps' etcd again after KillConfigMapsEtcd.
func (c *Cluster) StartConfigMapsEtcd() error {
	if c.configMapsEtcd == nil {
		return c.wrap("start configmaps etcd", errNoConfigMapsEtcd)
	}
	if _, ok := c.configMapsEtcd.pid(); ok {
		return nil
	}
	return c.wrap("start configmaps etcd", c.configMapsEtcd.start())
}

// Down kills every process of the cluster. The data folders are kept.
func (c *Cluster) Down() error {
	var errs *multierror.Error
	errs = multierror.Append(errs, c.apiserver.kill())
	for _, e := range c.etcds() {
		errs = multierror.Append(errs, e.kill())
	}
	return c.wrap("down", errs.ErrorOrNil())
}

// Status describes the cluster's processes and whether its apiserver answers.
type Status struct {
	Name         string
	Server       string
	Version      string
	APIServerPID int // 0 when not running
	EtcdPID      int
	// ConfigMapsEtcdPID is the second etcd's, in a cluster that has one (HasConfigMapsEtcd).
	ConfigMapsEtcdPID int
	HasConfigMapsEtcd bool
	Ready             bool
	ReadyzProblem     string
}

// Status probes /readyz with a short timeout.
func (c *Cluster) Status(ctx context.Context) Status {
	s := Status{Name: c.Name, Server: c.Server(), Version: c.Version, HasConfigMapsEtcd: c.configMapsEtcd != nil}
	if pid, ok := c.apiserver.pid(); ok {
		s.APIServerPID = pid
	}
	if pid, ok := c.etcd.pid(); ok {
		s.EtcdPID = pid
	}
	if c.configMapsEtcd != nil {
		if pid, ok := c.configMapsEtcd.pid(); ok {
			s.ConfigMapsEtcdPID = pid
		}
	}
	cfg := c.AdminConfig()
	cfg.Timeout = time.Second
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		s.ReadyzProblem = err.Error()
		return s
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.Server()+"/readyz", nil)
	resp, err := client.Do(req)
	if err != nil {
		s.ReadyzProblem = err.Error()
		return s
	}
	defer resp.Body.Close()
	s.Ready = resp.StatusCode == http.StatusOK
	if !s.Ready {
		s.ReadyzProblem = resp.Status
	}
	return s
}

func (c *Cluster) wrap(verb string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("cluster %s: %s: %w", c.Name, verb, err)
}
