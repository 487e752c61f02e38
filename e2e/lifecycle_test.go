package e2e

import (
	"bufio"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetcache/fleetcache/internal/testfleet"
)

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// process is a fleetcache started by a test, apart from the shared daemon.
type process struct {
	cmd    *exec.Cmd
	url    string
	log    string
	exited chan error
}

func startProcess(t testing.TB, bin string, env []string, args ...string) *process {
	t.Helper()
	addr := freeAddr(t)
	p := &process{url: "http://" + addr, log: filepath.Join(t.TempDir(), "fleetcache.log"), exited: make(chan error, 1)}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, append([]string{"serve", "--listen", addr}, args...)...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		if t.Failed() {
			logs, _ := os.ReadFile(p.log)
			t.Logf("fleetcache log:\n%s", logs)
		}
	})
	if err := waitReady(p.url, p.log); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBinaryBuiltAsTheDockerfileBuildsIt builds with the Dockerfile's own build step and
// checks the result is static, stamped and serves.
func TestBinaryBuiltAsTheDockerfileBuildsIt(t *testing.T) {
	startDaemon(t)
	raw, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	dockerfile := string(raw)
	stages := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(dockerfile, -1)
	if len(stages) != 2 || !strings.HasPrefix(stages[0][1], "golang:1.26") || !strings.Contains(stages[1][1], "distroless/static") || !strings.HasSuffix(stages[1][1], ":nonroot") {
		t.Errorf("want a golang:1.26 build stage and a distroless static nonroot runtime, got %v", stages)
	}
	build := regexp.MustCompile(`(?m)^RUN (make build.*)$`).FindStringSubmatch(dockerfile)
	if build == nil {
		t.Fatal("the Dockerfile does not build with make build")
	}
	if !regexp.MustCompile(`(?m)^USER 65532`).MatchString(dockerfile) || !strings.Contains(dockerfile, `ENTRYPOINT ["/fleetcache"]`) {
		t.Error("the runtime stage must run /fleetcache as user 65532")
	}
	// The same command, with the build argument set and the output in a temporary folder.
	dir := t.TempDir()
	cmdline := strings.ReplaceAll(build[1], "${VERSION}", "v9.9.9-dockerfile-test") + " BINDIR=" + dir
	cmd := exec.Command("sh", "-c", cmdline)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmdline, err, out)
	}
	bin := filepath.Join(dir, "fleetcache")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked; CGO_ENABLED=0 should make it static")
		}
	}
	f.Close()
	out, err := exec.Command(bin, "version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "fleetcache v9.9.9-dockerfile-test" {
		t.Errorf("version: %q %v", out, err)
	}
	p := startProcess(t, bin, nil, "--kubeconfig", fleet.Kubeconfig, "--context", "*-reader")
	resp, err := http.Get(p.url + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestSIGTERMDrainsAndExitsZero sends SIGTERM while a watch stream is open and a list is
// being read: the list completes, the stream ends cleanly, the process exits 0.
func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	d := startDaemon(t)
	p := startProcess(t, d.bin, nil, "--config", d.config, "--shutdown-grace-period", "15s")

	// One watch through each API: both must end cleanly when shutdown starts, not be cut
	// when the grace period is over.
	var watches []chan error
	for _, path := range []string{"/api/v1/watch?resource=pods", "/fleet/api/v1/pods?watch=1"} {
		resp, err := http.Get(p.url + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %v %v", path, err, resp)
		}
		done := make(chan error, 1)
		go func() {
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<24)
			for sc.Scan() {
			}
			done <- sc.Err() // nil: the chunked stream was terminated properly
		}()
		watches = append(watches, done)
	}

	listResp, err := http.Get(p.url + "/api/v1/objects?resource=pods&limit=5000")
	if err != nil {
		t.Fatal(err)
	}
	// Read the first bytes, signal, then read the rest slowly.
	head := make([]byte, 64)
	if _, err := io.ReadFull(listResp.Body, head); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(&slowReader{r: listResp.Body})
	if err != nil {
		t.Fatalf("list cut short: %v", err)
	}
	var page objectsPage
	if err := json.Unmarshal(append(head, rest...), &page); err != nil || len(page.Items) == 0 {
		t.Fatalf("list incomplete after SIGTERM: %v (%d items)", err, len(page.Items))
	}
	for i, done := range watches {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("watch stream %d did not end cleanly: %v", i, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("watch stream %d still open 20s after SIGTERM", i)
		}
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("exit: %v, want status 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("process still running 20s after SIGTERM")
	}
	t.Logf("exited %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	logs, _ := os.ReadFile(p.log)
	if !strings.Contains(string(logs), "shutting down") || !strings.Contains(string(logs), `"stopped"`) {
		t.Errorf("shutdown not logged:\n%s", logs)
	}
}

type slowReader struct{ r io.Reader }

func (s *slowReader) Read(b []byte) (int, error) {
	time.Sleep(2 * time.Millisecond)
	return s.r.Read(b[:min(len(b), 512)])
}

// TestInClusterSource runs fleetcache as if in a pod: no kubeconfig, the service account
// token and CA where kubelet mounts them, KUBERNETES_SERVICE_HOST/PORT set.
func TestInClusterSource(t *testing.T) {
	d := startDaemon(t)
	c := fleet.Clusters[0]
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(c.AdminConfig())
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "fleetcache", Namespace: "default"}}
	if _, err := cs.CoreV1().ServiceAccounts("default").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "fleetcache-in-cluster"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: testfleet.ReaderClusterRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "fleetcache", Namespace: "default"}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := cs.CoreV1().ServiceAccounts("default").CreateToken(ctx, "fleetcache", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	saDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(saDir, "token"), []byte(tok.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(saDir, "ca.crt"), c.CAData(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("inCluster: {mode: auto, name: management, serviceAccountDir: %s}\nresources: [{name: pods}, {name: namespaces}]\n", saDir)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"KUBERNETES_SERVICE_HOST=127.0.0.1", fmt.Sprintf("KUBERNETES_SERVICE_PORT=%d", c.APIPort), "KUBECONFIG=", "HOME=" + t.TempDir()}
	p := startProcess(t, d.bin, env, "--config", cfg)
	var status struct {
		Clusters []struct {
			Name, Phase, Context string
			Resources            []struct {
				Resource string
				Objects  int
			}
		}
	}
	resp, err := http.Get(p.url + "/api/v1/clusters")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&status); err != nil {
		t.Fatal(err)
	}
	if len(status.Clusters) != 1 || status.Clusters[0].Name != "management" || status.Clusters[0].Phase != "Synced" || status.Clusters[0].Context != "in-cluster" {
		t.Fatalf("clusters: %+v", status.Clusters)
	}
	want := countIn(kubectlSet(t, "pods", "-A"), c.Name)
	for _, r := range status.Clusters[0].Resources {
		if r.Resource == "pods" && r.Objects != want {
			t.Errorf("in-cluster pods: %d, kubectl says %d", r.Objects, want)
		}
	}
}
