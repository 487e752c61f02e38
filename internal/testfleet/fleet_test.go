package testfleet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

var fleet *Fleet

func TestMain(m *testing.M) {
	if os.Getenv("TESTFLEET_ORPHAN_HELPER") != "" {
		orphanHelper()
		return
	}
	Main(m, Options{Clusters: 3}, &fleet)
}

func needFleet(t *testing.T) {
	t.Helper()
	if fleet == nil {
		t.Skip("needs the real fleet (not started with -short)")
	}
}

func clientFor(t *testing.T, cfg *rest.Config) *kubernetes.Clientset {
	t.Helper()
	cfg.Timeout = 10 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestEveryContextAnswers(t *testing.T) {
	needFleet(t)
	raw, err := clientcmd.LoadFromFile(fleet.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(raw.Contexts), 2*len(fleet.Clusters); got != want {
		t.Fatalf("kubeconfig has %d contexts, want %d (admin and reader per cluster)", got, want)
	}
	for _, c := range fleet.Clusters {
		for _, ctxName := range []string{c.Name, c.Name + "-reader"} {
			cfg, err := clientcmd.NewNonInteractiveClientConfig(*raw, ctxName, nil, nil).ClientConfig()
			if err != nil {
				t.Fatalf("context %s: %v", ctxName, err)
			}
			v, err := clientFor(t, cfg).Discovery().ServerVersion()
			if err != nil {
				t.Fatalf("context %s: %v", ctxName, err)
			}
			if v.GitVersion != c.Version {
				t.Errorf("context %s: server version %q, want %s", ctxName, v.GitVersion, c.Version)
			}
			if cfg.Host != c.Server() {
				t.Errorf("context %s points at %s, want %s", ctxName, cfg.Host, c.Server())
			}
		}
	}
}

// TestFleetIsMixed: the default fleet has its old cluster and its split cluster where
// Options documents them, and the others are plain.
func TestFleetIsMixed(t *testing.T) {
	needFleet(t)
	for i, c := range fleet.Clusters {
		wantVersion, wantWatchList, wantSplit := CurrentVersion, true, false
		switch i {
		case MixedOldIndex:
			wantVersion, wantWatchList = OldVersion, false
		case MixedSplitIndex:
			wantSplit = true
		}
		if c.Version != wantVersion || c.WatchList() != wantWatchList || c.ConfigMapsOnSecondEtcd() != wantSplit {
			t.Errorf("cluster %d (%s): version %s, watch-list %v, configmaps on a second etcd %v; want %s, %v, %v",
				i, c.Name, c.Version, c.WatchList(), c.ConfigMapsOnSecondEtcd(), wantVersion, wantWatchList, wantSplit)
		}
		if s := c.Status(context.Background()); s.HasConfigMapsEtcd != wantSplit || wantSplit && s.ConfigMapsEtcdPID == 0 {
			t.Errorf("cluster %s: status %+v", c.Name, s)
		}
	}
}

// TestUpRefusesAnotherLayout: Up does not start a fleet folder made by an older testfleet
// (every cluster alike) or with other options; Open still loads it, so that it can be
// stopped and destroyed.
func TestUpRefusesAnotherLayout(t *testing.T) {
	bin := t.TempDir()
	for _, b := range []string{"etcd", "kube-apiserver", OldAPIServer} {
		if err := os.WriteFile(filepath.Join(bin, b), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	layout1 := `{"clusters": [{"name": "alpha", "apiPort": 1, "etcdPort": 2, "peerPort": 3}, {"name": "bravo", "apiPort": 4, "etcdPort": 5, "peerPort": 6}, {"name": "charlie", "apiPort": 7, "etcdPort": 8, "peerPort": 9}]}`
	uniform2 := `{"layout": 2, "clusters": [{"name": "alpha", "apiPort": 1, "etcdPort": 2, "peerPort": 3, "apiServer": "kube-apiserver", "version": "v1.37.2"}]}`
	for _, tc := range []struct {
		name, state string
		opts        Options
		want        string
	}{
		{"layout 1", layout1, Options{}, "has layout 1"},
		{"layout 2, uniform cluster in a mixed fleet", strings.Replace(uniform2, `]}`, `, {"name": "bravo", "apiPort": 4, "etcdPort": 5, "peerPort": 6, "apiServer": "kube-apiserver", "version": "v1.37.2"}]}`, 1), Options{Clusters: 2}, "cluster bravo is kube-apiserver v1.37.2, one etcd, the options ask for kube-apiserver v1.37.2, configmaps on a second etcd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "fleet.json"), []byte(tc.state), 0o644); err != nil {
				t.Fatal(err)
			}
			opts := tc.opts
			opts.Dir, opts.BinDir = dir, bin
			_, err := Up(context.Background(), opts)
			if !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "hack/fleet.sh destroy") {
				t.Fatalf("Up: %v; want ErrLayout saying %q and how to destroy the folder", err, tc.want)
			}
			raw, _ := os.ReadFile(filepath.Join(dir, "fleet.json"))
			if string(raw) != tc.state {
				t.Errorf("Up rewrote the refused fleet.json:\n%s", raw)
			}
			f, err := Open(opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range f.Clusters {
				if c.Version != CurrentVersion || !c.WatchList() || c.ConfigMapsOnSecondEtcd() {
					t.Errorf("Open: cluster %s: %s, watch-list %v, split %v; want what it was made as", c.Name, c.Version, c.WatchList(), c.ConfigMapsOnSecondEtcd())
				}
			}
		})
	}
	// A uniform fleet of the current layout is what Options{Uniform: true} asks for.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fleet.json"), []byte(uniform2), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkLayout(filepath.Join(dir, "fleet.json"), mustState(t, uniform2), Options{Uniform: true, Clusters: 1}); err != nil {
		t.Errorf("a uniform fleet refused for Options.Uniform: %v", err)
	}
}

func mustState(t *testing.T, raw string) state {
	t.Helper()
	var st state
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestClustersAreIndependent(t *testing.T) {
	needFleet(t)
	ctx := context.Background()
	a := fleet.Clusters[0]
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "only-in-" + a.Name}}
	if _, err := clientFor(t, a.AdminConfig()).CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = clientFor(t, a.AdminConfig()).CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{})
	})
	if _, err := clientFor(t, a.ReaderConfig()).CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace missing from its own cluster: %v", err)
	}
	for _, other := range fleet.Clusters[1:] {
		_, err := clientFor(t, other.ReaderConfig()).CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("cluster %s: get namespace %s: got %v, want NotFound", other.Name, ns.Name, err)
		}
	}
}

func TestReaderIsReadOnly(t *testing.T) {
	needFleet(t)
	ctx := context.Background()
	for _, c := range fleet.Clusters {
		reader := clientFor(t, c.ReaderConfig())
		nss, err := reader.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("cluster %s: reader list: %v", c.Name, err)
		}
		if len(nss.Items) == 0 {
			t.Errorf("cluster %s: reader listed no namespaces", c.Name)
		}
		_, err = reader.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "nope"}}, metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("cluster %s: reader create: got %v, want Forbidden", c.Name, err)
		}
	}
}

func TestTokensDifferBetweenClusters(t *testing.T) {
	needFleet(t)
	a, b := fleet.Clusters[0], fleet.Clusters[1]
	for name, token := range map[string]string{"reader": a.ReaderToken(), "admin": a.AdminToken()} {
		cfg := b.ReaderConfig()
		cfg.BearerToken = token
		_, err := clientFor(t, cfg).CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{})
		if !apierrors.IsUnauthorized(err) {
			t.Errorf("%s token of %s against %s: got %v, want Unauthorized", name, a.Name, b.Name, err)
		}
	}
}

func TestSeededInventoryMatchesPlan(t *testing.T) {
	needFleet(t)
	ctx := context.Background()
	plans := map[string]*Plan{}
	for _, c := range fleet.Clusters {
		p, err := Seed(ctx, c, SeedOptions{})
		if err != nil {
			t.Fatal(err)
		}
		plans[c.Name] = p
	}
	if plans["alpha"].Count("pods") == plans["bravo"].Count("pods") && plans["alpha"].Count("namespaces") == plans["bravo"].Count("namespaces") {
		t.Errorf("alpha and bravo got the same inventory size")
	}
	sel := metav1.ListOptions{LabelSelector: SeedLabel}
	for _, c := range fleet.Clusters {
		p := plans[c.Name]
		cs := clientFor(t, c.ReaderConfig())
		lists := map[string]func() (runtime.Object, error){
			"namespaces":  func() (runtime.Object, error) { return cs.CoreV1().Namespaces().List(ctx, sel) },
			"nodes":       func() (runtime.Object, error) { return cs.CoreV1().Nodes().List(ctx, sel) },
			"deployments": func() (runtime.Object, error) { return cs.AppsV1().Deployments("").List(ctx, sel) },
			"replicasets": func() (runtime.Object, error) { return cs.AppsV1().ReplicaSets("").List(ctx, sel) },
			"pods":        func() (runtime.Object, error) { return cs.CoreV1().Pods("").List(ctx, sel) },
			"services":    func() (runtime.Object, error) { return cs.CoreV1().Services("").List(ctx, sel) },
			"configmaps":  func() (runtime.Object, error) { return cs.CoreV1().ConfigMaps("").List(ctx, sel) },
			"secrets":     func() (runtime.Object, error) { return cs.CoreV1().Secrets("").List(ctx, sel) },
		}
		for res, list := range lists {
			l, err := list()
			if err != nil {
				t.Fatalf("cluster %s: list %s: %v", c.Name, res, err)
			}
			got := meta.LenList(l)
			if want := p.Count(res); got != want || want == 0 {
				t.Errorf("cluster %s: %d %s, plan says %d", c.Name, got, res, want)
			}
		}

		pods, err := cs.CoreV1().Pods("").List(ctx, sel)
		if err != nil {
			t.Fatal(err)
		}
		phases := map[corev1.PodPhase]int{}
		for _, pod := range pods.Items {
			phases[pod.Status.Phase]++
			if len(pod.OwnerReferences) != 1 || pod.OwnerReferences[0].Kind != "ReplicaSet" || pod.OwnerReferences[0].UID == "" {
				t.Errorf("cluster %s: pod %s/%s owner references %v, want its ReplicaSet", c.Name, pod.Namespace, pod.Name, pod.OwnerReferences)
			}
			if pod.Spec.NodeName == "" || len(pod.Spec.Containers) == 0 || pod.Spec.Containers[0].Image == "" {
				t.Errorf("cluster %s: pod %s/%s lacks node or image", c.Name, pod.Namespace, pod.Name)
			}
		}
		for _, phase := range []corev1.PodPhase{corev1.PodRunning, corev1.PodPending, corev1.PodSucceeded, corev1.PodFailed} {
			if phases[phase] != p.PodsInPhase(phase) {
				t.Errorf("cluster %s: %d pods %s, plan says %d", c.Name, phases[phase], phase, p.PodsInPhase(phase))
			}
		}
		secrets, err := cs.CoreV1().Secrets("").List(ctx, sel)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets.Items {
			if len(s.Data["password"]) == 0 {
				t.Errorf("cluster %s: secret %s/%s has no data", c.Name, s.Namespace, s.Name)
			}
		}

		// The Widget CRD exists only in some clusters.
		_, err = cs.Discovery().ServerResourcesForGroupVersion("example.com/v1")
		switch {
		case HasWidgets(c.Index) && err != nil:
			t.Errorf("cluster %s: widgets not served: %v", c.Name, err)
		case !HasWidgets(c.Index) && !apierrors.IsNotFound(err):
			t.Errorf("cluster %s: example.com/v1: got %v, want NotFound", c.Name, err)
		}
	}
}

// TestKillAndRestart kills one cluster's apiserver: the others keep serving, and after a
// restart it is ready again with its data.
func TestKillAndRestart(t *testing.T) {
	needFleet(t)
	ctx := context.Background()
	victim := fleet.Clusters[1]
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "survives-restart"}}
	if _, err := clientFor(t, victim.AdminConfig()).CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	_, err := clientFor(t, victim.ReaderConfig()).CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if !isConnRefused(err) {
		t.Errorf("killed cluster: got %v, want connection refused", err)
	}
	assertOthersServe(t, victim)

	if err := victim.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := clientFor(t, victim.ReaderConfig()).CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("after restart: %v", err)
	}
}

// TestStoppedClusterHangs freezes one apiserver: requests to it time out instead of failing
// fast, and the others keep serving.
func TestStoppedClusterHangs(t *testing.T) {
	needFleet(t)
	victim := fleet.Clusters[2]
	if err := victim.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := victim.Cont(); err != nil {
			t.Error(err)
		}
		if err := victim.WaitReady(context.Background()); err != nil {
			t.Error(err)
		}
	})
	cfg := victim.ReaderConfig()
	cfg.Timeout = time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{})
	if !isTimeout(err) {
		t.Errorf("stopped cluster: got %v, want a timeout", err)
	}
	assertOthersServe(t, victim)
}

func TestEtcdKillAndStart(t *testing.T) {
	needFleet(t)
	victim := fleet.Clusters[0]
	if err := victim.KillEtcd(); err != nil {
		t.Fatal(err)
	}
	// With its etcd gone the apiserver stays up but reports itself not ready.
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		s := victim.Status(ctx)
		return s.APIServerPID != 0 && s.EtcdPID == 0 && !s.Ready, nil
	})
	if err != nil {
		t.Errorf("apiserver never reported its etcd failing: %v", victim.Status(context.Background()))
	}
	assertOthersServe(t, victim)
	if err := victim.StartEtcd(); err != nil {
		t.Fatal(err)
	}
	if err := victim.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func assertOthersServe(t *testing.T, victim *Cluster) {
	t.Helper()
	for _, c := range fleet.Clusters {
		if c == victim {
			continue
		}
		if _, err := clientFor(t, c.ReaderConfig()).CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{}); err != nil {
			t.Errorf("cluster %s stopped serving while %s was down: %v", c.Name, victim.Name, err)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return err != nil && (errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) || strings.Contains(err.Error(), "Client.Timeout exceeded"))
}

func isConnRefused(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection refused")
}

// TestProcessesDieWithOwner starts a fleet from a child process, SIGKILLs the child, and
// checks that the kernel took its etcd and kube-apiserver with it.
func TestProcessesDieWithOwner(t *testing.T) {
	needFleet(t)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TESTFLEET_ORPHAN_HELPER="+dir, "FLEETCACHE_BIN="+fleetBin())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		_ = cmd.Process.Kill()
		t.Fatalf("helper did not start its fleet: %q %v", line, err)
	}
	if n := countProcs(t, dir); n != 2 {
		t.Fatalf("helper runs %d fleet processes, want 2", n)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	err = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return countProcs(t, dir) == 0, nil
	})
	if err != nil {
		t.Errorf("%d processes outlived their SIGKILLed owner", countProcs(t, dir))
		_, _ = Reap(dir)
	}
}

func fleetBin() string {
	return strings.TrimSuffix(fleet.Clusters[0].apiserver.bin, "/kube-apiserver")
}

func countProcs(t *testing.T, dir string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(cmdline), dir) && !strings.Contains(string(cmdline), "-test.run") {
			stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
			if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
				continue
			}
			n++
		}
	}
	return n
}

// orphanHelper runs in the child of TestProcessesDieWithOwner: one cluster, then wait to
// be killed.
func orphanHelper() {
	_, err := Up(context.Background(), Options{Dir: os.Getenv("TESTFLEET_ORPHAN_HELPER"), Clusters: 1})
	if err != nil {
		println("helper:", err.Error())
		os.Exit(1)
	}
	os.Stdout.WriteString("ready\n")
	select {}
}
