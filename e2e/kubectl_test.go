package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// fleetKubectl runs the real kubectl through the kubeconfig `fleetcache kubeconfig`
// prints, so every request goes to the daemon's Kubernetes API.
type fleetKubectl struct {
	kubeconfig, cacheDir string
}

func newFleetKubectl(t testing.TB, d *daemon) *fleetKubectl {
	t.Helper()
	dir := t.TempDir()
	k := &fleetKubectl{kubeconfig: filepath.Join(dir, "kubeconfig"), cacheDir: filepath.Join(dir, "cache")}
	if err := os.WriteFile(k.kubeconfig, []byte(d.cli(t, "kubeconfig")), 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

func (k *fleetKubectl) run(args ...string) (string, string, error) {
	cmd := exec.Command(filepath.Join(os.Getenv("FLEETCACHE_BIN"), "kubectl"), append([]string{"--kubeconfig", k.kubeconfig, "--cache-dir", k.cacheDir}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	return string(out), stderr.String(), err
}

func (k *fleetKubectl) must(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, err := k.run(args...)
	if err != nil {
		t.Fatalf("kubectl %v through fleetcache: %v\n%s", args, err, stderr)
	}
	return out
}

const clusterNsName = `jsonpath={range .items[*]}{.metadata.annotations.fleetcache\.io/cluster}/{.metadata.namespace}/{.metadata.name}{"\n"}{end}`

func sorted(out string) []string {
	lines := strings.Fields(out)
	sort.Strings(lines)
	return lines
}

// TestKubectlGetAllThroughFleet: discovery carries the clusters' categories, so
// `kubectl get all -A` through fleetcache is every cluster's `get all`, for the cached
// resources (pods, deployments and the Widget CRD, which is in "all" too).
func TestKubectlGetAllThroughFleet(t *testing.T) {
	d := startDaemon(t)
	k := newFleetKubectl(t, d)
	cached := map[string]bool{"Pod": true, "Deployment": true, "Widget": true}
	var want []string
	for _, c := range fleet.Clusters {
		out, err := kubectl(t, c.Name, "get", "all", "-A", "--no-headers", "-o", "custom-columns=KIND:.kind,NS:.metadata.namespace,NAME:.metadata.name")
		if err != nil {
			t.Fatalf("kubectl get all in %s: %v\n%s", c.Name, err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) == 3 && cached[f[0]] {
				want = append(want, c.Name+"/"+strings.Join(f, "/"))
			}
		}
	}
	sort.Strings(want)
	out := k.must(t, "get", "all", "-A", "--no-headers", "-o", `custom-columns=CLUSTER:.metadata.annotations.fleetcache\.io/cluster,KIND:.kind,NS:.metadata.namespace,NAME:.metadata.name`)
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		got = append(got, strings.Join(strings.Fields(line), "/"))
	}
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("kubectl get all -A through fleetcache:\n got  %v\n want %v", got, want)
	}
	kinds := map[string]bool{}
	for _, w := range want {
		kinds[strings.Split(w, "/")[1]] = true
	}
	if len(kinds) != len(cached) {
		t.Errorf("the clusters' get all has kinds %v; want every one of %v to compare", kinds, cached)
	}
}

func TestKubectlThroughFleetEqualsKubectlPerCluster(t *testing.T) {
	d := startDaemon(t)
	k := newFleetKubectl(t, d)
	cases := []struct {
		resource string
		args     []string
	}{
		{"pods", []string{"-A"}},
		{"pods", []string{"-A", "-l", "app=api"}},
		{"pods", []string{"-A", "-l", "app notin (web)"}},
		{"pods", []string{"-A", "--field-selector", "status.phase=Running"}},
		{"pods", []string{"-n", "payments"}},
		{"deployments", []string{"-A"}},
		{"deploy", []string{"-A", "-l", "app=worker"}},
		{"widgets", []string{"-A"}},
		{"widget", []string{"-A"}},
		{"wg", []string{"-A"}},
		{"nodes", nil},
	}
	for _, tc := range cases {
		t.Run(tc.resource+" "+strings.Join(tc.args, " "), func(t *testing.T) {
			want := kubectlSet(t, tc.resource, tc.args...)
			got := sorted(k.must(t, append([]string{"get", tc.resource, "-o", clusterNsName}, tc.args...)...))
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("through fleetcache:\n got  %v\n want %v", got, want)
			}
			if len(want) == 0 {
				t.Error("nothing to compare: the seed should have made some")
			}
		})
	}
}

func TestKubectlOutputFormats(t *testing.T) {
	d := startDaemon(t)
	k := newFleetKubectl(t, d)
	want := kubectlSet(t, "pods", "-A")

	table := k.must(t, "get", "pods", "-A")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if h := strings.Fields(lines[0]); len(h) < 3 || h[0] != "NAMESPACE" || h[1] != "CLUSTER" || h[2] != "NAME" {
		t.Errorf("header %q: want NAMESPACE CLUSTER NAME ...", lines[0])
	}
	if len(lines)-1 != len(want) {
		t.Errorf("table has %d rows, the clusters %d pods", len(lines)-1, len(want))
	}
	var rows []string
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		rows = append(rows, f[1]+"/"+f[0]+"/"+f[2])
	}
	sort.Strings(rows)
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("table rows:\n got  %v\n want %v", rows, want)
	}

	wide := k.must(t, "get", "pods", "-A", "-o", "wide")
	if h := strings.Fields(strings.SplitN(wide, "\n", 2)[0]); !slices.Contains(h, "NODE") || !slices.Contains(h, "IP") {
		t.Errorf("-o wide header lacks NODE/IP: %v", h)
	}
	names := strings.Fields(k.must(t, "get", "pods", "-A", "-o", "name"))
	if len(names) != len(want) || !strings.HasPrefix(names[0], "pod/") {
		t.Errorf("-o name: %d lines (%v...), want %d pod/... lines", len(names), names[:min(2, len(names))], len(want))
	}
	// -o yaml and -o json: whole objects, streamed, each tagged with its cluster.
	for _, format := range []string{"yaml", "json"} {
		var list struct {
			Items []metav1.PartialObjectMetadata `json:"items"`
		}
		if err := yaml.Unmarshal([]byte(k.must(t, "get", "pods", "-A", "-o", format)), &list); err != nil {
			t.Fatal(err)
		}
		var items []string
		for _, it := range list.Items {
			items = append(items, it.Annotations["fleetcache.io/cluster"]+"/"+it.Namespace+"/"+it.Name)
		}
		sort.Strings(items)
		if fmt.Sprint(items) != fmt.Sprint(want) {
			t.Errorf("-o %s items:\n got  %v\n want %v", format, items, want)
		}
	}
}

func TestKubectlGetOneObjectPerCluster(t *testing.T) {
	d := startDaemon(t)
	k := newFleetKubectl(t, d)
	for _, c := range fleet.Clusters {
		direct, err := kubectl(t, c.Name, "get", "deployment", "api", "-n", "payments", "-o", "jsonpath={.metadata.uid}")
		if err != nil {
			continue // not every cluster has it
		}
		got := k.must(t, "--context", "fleet-"+c.Name, "get", "deployment", "api", "-n", "payments", "-o", "jsonpath={.metadata.uid} {.metadata.annotations.fleetcache\\.io/cluster}")
		if got != direct+" "+c.Name {
			t.Errorf("%s: got %q, want uid %s tagged %s", c.Name, got, direct, c.Name)
		}
	}
	if _, stderr, err := k.run("--context", "fleet-"+fleet.Clusters[0].Name, "get", "pod", "no-such-pod", "-n", "payments"); err == nil || !strings.Contains(stderr, "not found") {
		t.Errorf("missing object: %v %s", err, stderr)
	}
}

func TestKubectlWatchSeesAChangeInOneCluster(t *testing.T) {
	d := startDaemon(t)
	k := newFleetKubectl(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(os.Getenv("FLEETCACHE_BIN"), "kubectl"), "--kubeconfig", k.kubeconfig, "--cache-dir", k.cacheDir,
		"get", "configmaps", "-n", "default", "-w", "--output-watch-events")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	time.Sleep(2 * time.Second) // let kubectl list and open its watch
	b := fleet.Clusters[1]
	cs := kubernetes.NewForConfigOrDie(b.AdminConfig())
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "seen-by-kubectl-w", Namespace: "default"}}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer cs.CoreV1().ConfigMaps("default").Delete(context.Background(), cm.Name, metav1.DeleteOptions{})
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("kubectl -w ended before showing the change")
			}
			f := strings.Fields(l)
			if len(f) >= 3 && f[0] == "ADDED" && f[1] == b.Name && f[2] == cm.Name {
				return
			}
		case <-ctx.Done():
			t.Fatal("kubectl -w never showed the new configmap")
		}
	}
}

// TestKubectlExplainThroughFleet: kubectl explain reads a cluster's OpenAPI schema through
// fleetcache (on the fleet context the first Synced cluster's, on fleet-<cluster> that
// cluster's) and prints what it prints against the cluster itself.
func TestKubectlExplainThroughFleet(t *testing.T) {
	d := startDaemon(t)
	k := newFleetKubectl(t, d)
	first := fleet.Clusters[0].Name // the first by name, and one with Widgets
	for _, tc := range []struct {
		context string
		args    []string
	}{
		{"fleet", []string{"explain", "pods.spec.nodeName"}},
		{"fleet", []string{"explain", "deployments.spec.replicas"}},
		{"fleet-" + first, []string{"explain", "widgets.spec"}},
	} {
		want, err := kubectl(t, first, tc.args...)
		if err != nil {
			t.Fatalf("kubectl %v in %s: %v\n%s", tc.args, first, err, want)
		}
		got, stderr, err := k.run(append([]string{"--context", tc.context}, tc.args...)...)
		if err != nil {
			t.Errorf("kubectl %v on %s: %v\n%s", tc.args, tc.context, err, stderr)
			continue
		}
		if strings.TrimSpace(got) != strings.TrimSpace(want) || !strings.Contains(got, "FIELD:") {
			t.Errorf("kubectl %v on %s:\n%s\nwant, as from %s itself:\n%s", tc.args, tc.context, got, first, want)
		}
	}
}

// TestKubectlAuthCanI: kubectl auth can-i answers from what fleetcache serves: the read
// verbs on cached resources, nothing on what is not cached (services), hidden (Secrets,
// without api.serveSecrets) or a write.
func TestKubectlAuthCanI(t *testing.T) {
	d := startDaemon(t)
	k := newFleetKubectl(t, d)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"list", "pods"}, "yes"},
		{[]string{"watch", "deployments.apps", "-n", "payments"}, "yes"},
		{[]string{"get", "widgets.example.com"}, "yes"},
		{[]string{"--context", "fleet-" + fleet.Clusters[1].Name, "get", "widgets.example.com"}, "no"}, // bravo has no Widgets
		{[]string{"delete", "pods"}, "no"},
		{[]string{"create", "configmaps"}, "no"},
		{[]string{"list", "services"}, "no"},
		{[]string{"list", "secrets"}, "no"},
		{[]string{"get", "pods", "--subresource", "log"}, "no"},
	} {
		out, stderr, _ := k.run(append([]string{"auth", "can-i"}, tc.args...)...)
		if answer, _, _ := strings.Cut(strings.TrimSpace(out), " "); answer != tc.want { // "no - <reason>"
			t.Errorf("kubectl auth can-i %v: %q (%s), want %s", tc.args, out, strings.TrimSpace(stderr), tc.want)
		}
	}
	out := k.must(t, "auth", "can-i", "--list")
	var podsRule string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "pods ") {
			podsRule = line
		}
	}
	if !strings.Contains(podsRule, "[get list watch]") || strings.Contains(out, "services") || strings.Contains(out, "secrets") {
		t.Errorf("kubectl auth can-i --list: pods %q; want get, list and watch on cached resources only:\n%s", podsRule, out)
	}
}

func TestKubectlWritesAreRefused(t *testing.T) {
	d := startDaemon(t)
	k := newFleetKubectl(t, d)
	manifest := filepath.Join(t.TempDir(), "cm.yaml")
	if err := os.WriteFile(manifest, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: nope, namespace: default}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"apply", "-f", manifest},
		{"create", "-f", manifest},
		{"--context", "fleet-" + fleet.Clusters[0].Name, "delete", "deployment", "api", "-n", "payments"},
		{"delete", "pods", "--all", "-n", "payments"},
	} {
		_, stderr, err := k.run(args...)
		if err == nil || !strings.Contains(stderr, "read-only") {
			t.Errorf("kubectl %v: err %v, stderr %q: want a read-only error", args, err, stderr)
		}
	}
	// Nothing changed in the cluster.
	if _, err := kubectl(t, fleet.Clusters[0].Name, "get", "deployment", "api", "-n", "payments"); err != nil {
		t.Errorf("the deployment is gone from the cluster: %v", err)
	}
}
