package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/fleetcache/fleetcache/internal/testfleet"
)

var fleet *testfleet.Fleet

func TestMain(m *testing.M) {
	if spec := os.Getenv(memoryChildEnv); spec != "" {
		os.Exit(memoryChild(spec)) // a child of BenchmarkRealFleetMemoryVsInformers
	}
	// Under make test the daemons are built with the race detector (raceDaemons); each
	// writes its reports to a file of its own in raceDir, and any report fails the run.
	raceDir, err := os.MkdirTemp("", "fleetcache-e2e-race-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer os.RemoveAll(raceDir)
	if raceDaemons() {
		os.Setenv("GORACE", "log_path="+filepath.Join(raceDir, "report")+" "+os.Getenv("GORACE"))
	}
	code := testfleet.Run(m, testfleet.Options{Clusters: 3}, &fleet)
	reports, _ := filepath.Glob(filepath.Join(raceDir, "report*"))
	for _, r := range reports {
		if b, _ := os.ReadFile(r); len(b) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: a fleetcache daemon reported a data race (%s):\n%s\n", r, b)
			code = 1
		}
	}
	os.RemoveAll(raceDir)
	os.Exit(code)
}

// raceDaemons reports whether the daemons the tests start are built with -race
// (FLEETCACHE_E2E_RACE=1, which make test sets; benchmarks run the normal build).
func raceDaemons() bool { return os.Getenv("FLEETCACHE_E2E_RACE") == "1" }

// daemon is one fleetcache process serving the fleet, shared by the package's tests.
type daemon struct {
	url    string
	bin    string
	config string
	log    string
	pid    int
}

var (
	daemonOnce sync.Once
	theDaemon  *daemon
	daemonErr  error
)

// continueTTL is short so that a test can see a continue token expire.
const continueTTL = 3 * time.Second

var e2eResources = []string{"namespaces", "nodes", "pods", "deployments.apps", "configmaps", "secrets", "widgets.example.com"}

// startDaemon seeds the fleet, builds the binary and starts it once.
func startDaemon(t testing.TB) *daemon {
	t.Helper()
	if fleet == nil {
		t.Skip("needs the real fleet (not started with -short)")
	}
	daemonOnce.Do(func() { theDaemon, daemonErr = launch() })
	if daemonErr != nil {
		t.Fatal(daemonErr)
	}
	return theDaemon
}

func launch() (*daemon, error) {
	for _, c := range fleet.Clusters {
		if _, err := testfleet.Seed(context.Background(), c, testfleet.SeedOptions{}); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "fleetcache-e2e-")
	if err != nil {
		return nil, err
	}
	d := &daemon{bin: filepath.Join(dir, "fleetcache"), config: filepath.Join(dir, "config.yaml"), log: filepath.Join(dir, "fleetcache.log")}
	build := []string{"build", "-o", d.bin}
	if raceDaemons() {
		build = append(build, "-race")
	}
	if out, err := exec.Command("go", append(build, "../cmd/fleetcache")...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build fleetcache: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	d.url = "http://" + addr

	if err := os.WriteFile(d.config, []byte("listen: "+addr+"\n"+daemonConfig(fleet.Kubeconfig)), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(d.log)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(d.bin, "serve", "--config", d.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The daemon dies with the test binary, however that ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d.pid = cmd.Process.Pid
	go func() { _ = cmd.Wait() }()
	if err := waitReady(d.url, d.log); err != nil {
		return nil, err
	}
	return d, nil
}

// daemonConfig is the shared daemon's configuration (without its listen address) over a
// kubeconfig with the fleet's contexts: the reader contexts, aliased to the clusters'
// names, and e2eResources.
func daemonConfig(kubeconfig string) string {
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "kubeconfig: [%s]\ncontexts:\n  include: ['*-reader']\n  aliases:\n", kubeconfig)
	for _, c := range fleet.Clusters {
		fmt.Fprintf(&cfg, "    %s-reader: %s\n", c.Name, c.Name)
	}
	cfg.WriteString("resources:\n")
	for _, r := range e2eResources {
		fmt.Fprintf(&cfg, "  - name: %s\n", r)
	}
	fmt.Fprintf(&cfg, "cluster: {probeInterval: 1s, requestTimeout: 2s, idleProofInterval: 5s, rediscoveryInterval: 1s, initialSyncTimeout: 20s}\napi: {continueTTL: %s}\nreadiness: {policy: atLeast, minClusters: %d}\nlog: {level: debug}\n", continueTTL, len(fleet.Clusters))
	return cfg.String()
}

// waitReady polls a fleetcache's /readyz for up to 3 minutes; the error carries its log.
func waitReady(url, logPath string) error {
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 3*time.Minute, true, func(context.Context) (bool, error) {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		logs, _ := os.ReadFile(logPath)
		return fmt.Errorf("fleetcache not ready: %v\n%s", err, logs)
	}
	return nil
}

// startFreshDaemon starts a daemon of its own with the shared daemon's configuration, for
// a test that reads what happened since a daemon started (its counters, its log), which
// the shared daemon mixes with the tests before.
func startFreshDaemon(t testing.TB) *daemon {
	t.Helper()
	shared := startDaemon(t) // seeds the fleet and builds the binary
	config := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(config, []byte(daemonConfig(fleet.Kubeconfig)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, shared.bin, nil, "--config", config)
	return &daemon{url: p.url, bin: shared.bin, config: config, log: p.log}
}

// getJSON fetches path?query into v and returns the status code.
func (d *daemon) getJSON(t testing.TB, path string, q url.Values, v any) int {
	t.Helper()
	resp, err := http.Get(d.url + path + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s?%s: %v", path, q.Encode(), err)
	}
	return resp.StatusCode
}

// cli runs the fleetcache client.
func (d *daemon) cli(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command(d.bin, append(args, "--server", d.url)...)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("fleetcache %v: %v\n%s", args, err, stderr)
	}
	return string(out)
}

// kubectl runs the real kubectl against one cluster through its reader context.
func kubectl(t testing.TB, cluster string, args ...string) (string, error) {
	t.Helper()
	// A discovery cache of this fleet's own: ~/.kube/cache is keyed by host:port, and a
	// port of an earlier run's apiserver that served other resources misleads kubectl.
	cache := filepath.Join(filepath.Dir(fleet.Kubeconfig), "kubectl-cache")
	cmd := exec.Command(filepath.Join(os.Getenv("FLEETCACHE_BIN"), "kubectl"), append([]string{"--kubeconfig", fleet.Kubeconfig, "--cache-dir", cache, "--context", cluster + "-reader"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// kubectlSet lists a resource in every cluster with kubectl and returns
// "cluster/namespace/name" for each object.
func kubectlSet(t testing.TB, resource string, args ...string) []string {
	t.Helper()
	var out []string
	for _, c := range fleet.Clusters {
		res, err := kubectl(t, c.Name, append([]string{"get", resource, "-o", `jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}`}, args...)...)
		if err != nil {
			if strings.Contains(res, "the server doesn't have a resource type") {
				continue // the CRD is not installed there
			}
			t.Fatalf("kubectl %s in %s: %v\n%s", resource, c.Name, err, res)
		}
		for _, line := range strings.Fields(res) {
			out = append(out, c.Name+"/"+line)
		}
	}
	sort.Strings(out)
	return out
}
