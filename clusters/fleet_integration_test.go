package clusters_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/testfleet"
)

var seedOnce sync.Once

// seeded seeds every cluster of the fleet once per test binary.
func seeded(t *testing.T) {
	t.Helper()
	if fleet == nil {
		t.Skip("needs the real fleet (not started with -short)")
	}
	seedOnce.Do(func() {
		for _, c := range fleet.Clusters {
			if _, err := testfleet.Seed(context.Background(), c, testfleet.SeedOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	})
}

var testResources = []string{"namespaces", "nodes", "pods", "deployments.apps", "replicasets.apps", "services", "configmaps", "secrets", "widgets.example.com"}

// readerKubeconfig writes a copy of the fleet's kubeconfig and returns its path; fleetcache
// reads through the "-reader" contexts, aliased to the cluster names.
func readerKubeconfig(t *testing.T) (string, clusters.ContextFilter) {
	t.Helper()
	raw, err := os.ReadFile(fleet.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	filter := clusters.ContextFilter{Include: []string{"*-reader"}, Aliases: map[string]string{}}
	for _, c := range fleet.Clusters {
		filter.Aliases[c.Name+"-reader"] = c.Name
	}
	return path, filter
}

// fastOptions shortens every interval so that tests converge in seconds.
// staleAfter is the tests' limit on a resource's staleness bound.
const staleAfter = 10 * time.Second

func fastOptions(resources ...string) clusters.FleetOptions {
	var specs []clusters.ResourceSpec
	for _, r := range resources {
		specs = append(specs, clusters.ResourceSpec{Name: r})
	}
	return clusters.FleetOptions{
		ReloadInterval: 200 * time.Millisecond,
		Cluster: clusters.Options{
			Resources:           specs,
			RequestTimeout:      2 * time.Second,
			ListTimeout:         10 * time.Second,
			InitialSyncTimeout:  20 * time.Second,
			ProbeInterval:       time.Second,
			IdleProofInterval:   5 * time.Second,
			StaleAfter:          staleAfter,
			RediscoveryInterval: time.Second,
			ListLimiter:         clusters.NewListLimiter(2),
		},
	}
}

func startFleet(t *testing.T, src clusters.Source, opts clusters.FleetOptions) *clusters.Fleet {
	t.Helper()
	opts.Logger = zaptest.NewLogger(t)
	f := clusters.NewFleet(src, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = f.Start(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("fleet did not stop within 30s")
		}
	})
	return f
}

// eventually fails the test unless cond holds within the timeout.
var eventually = testfleet.Eventually

func phaseIs(f *clusters.Fleet, cluster string, want clusters.Phase) func() (bool, string) {
	return func() (bool, string) {
		c := f.Cluster(cluster)
		if c == nil {
			return false, "no cluster " + cluster
		}
		s := c.Status()
		return s.Phase == want, fmt.Sprintf("cluster %s is %s (%s: %s)", cluster, s.Phase, s.Reason, s.Message)
	}
}

func resourceStatus(f *clusters.Fleet, cluster, resource string) (clusters.ResourceStatus, bool) {
	c := f.Cluster(cluster)
	if c == nil {
		return clusters.ResourceStatus{}, false
	}
	for _, r := range c.Status().Resources {
		if r.Resource == resource || r.Requested == resource {
			return r, true
		}
	}
	return clusters.ResourceStatus{}, false
}

// kubectlCount counts a resource's objects in a cluster with the real kubectl.
func kubectlCount(t *testing.T, cluster, resource string) int {
	t.Helper()
	out, err := exec.Command(filepath.Join(os.Getenv("FLEETCACHE_BIN"), "kubectl"), "--kubeconfig", fleet.Kubeconfig,
		"--context", cluster+"-reader", "get", resource, "-A", "-o", "name").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get %s in %s: %v\n%s", resource, cluster, err, out)
	}
	return len(strings.Fields(string(out)))
}

func assertCountsMatchKubectl(t *testing.T, f *clusters.Fleet, cluster string) {
	t.Helper()
	for _, res := range testResources {
		if res == "widgets.example.com" && !testfleet.HasWidgets(mustCluster(t, cluster).Index) {
			continue
		}
		var got clusters.ResourceStatus
		// Events for just-made objects may still be on their way: wait for the counts to meet.
		eventually(t, 10*time.Second, cluster+"/"+res+" count", func() (bool, string) {
			var ok bool
			got, ok = resourceStatus(f, cluster, res)
			want := kubectlCount(t, cluster, res)
			return ok && got.Objects == want, fmt.Sprintf("cache has %d, kubectl %d", got.Objects, want)
		})
		if got.Objects == 0 {
			t.Errorf("%s/%s: no objects at all; the seed should have made some", cluster, res)
		}
	}
}

func mustCluster(t *testing.T, name string) *testfleet.Cluster {
	t.Helper()
	c, err := fleet.Cluster(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFleetSyncsAndCountsMatchKubectl(t *testing.T) {
	seeded(t)
	path, filter := readerKubeconfig(t)
	f := startFleet(t, clusters.KubeconfigSource{Paths: []string{path}, Filter: filter}, fastOptions(testResources...))
	for _, c := range fleet.Clusters {
		eventually(t, 30*time.Second, c.Name+" synced", phaseIs(f, c.Name, clusters.PhaseSynced))
	}
	if !f.Loaded() {
		t.Error("fleet not loaded although every cluster is synced")
	}
	for _, r := range f.Readiness() {
		if !r.Settled || !r.EverSynced || !r.Synced {
			t.Errorf("%s: readiness %+v although synced", r.Name, r)
		}
	}
	for _, c := range fleet.Clusters {
		assertCountsMatchKubectl(t, f, c.Name)
		s := f.Cluster(c.Name).Status()
		// The mixed fleet's clusters run different versions (testfleet.Options).
		if s.Version != c.Version || s.InitialSyncTime == nil || s.LastProbeTime == nil {
			t.Errorf("%s: incomplete status: version %q (want %s), initial sync %v, last probe %v", c.Name, s.Version, c.Version, s.InitialSyncTime, s.LastProbeTime)
		}
		for _, r := range s.Resources {
			if r.Phase == clusters.PhaseNotServed {
				continue
			}
			if !r.WatchConnected || r.LastListTime == nil || r.InitialSyncTime == nil {
				t.Errorf("%s/%s: watch %v, last list %v, initial sync %v", c.Name, r.Resource, r.WatchConnected, r.LastListTime, r.InitialSyncTime)
			}
			// Synced means proven current: the bound exists and is within staleAfter.
			if r.StalenessSeconds == nil || *r.StalenessSeconds > staleAfter.Seconds() {
				t.Errorf("%s/%s: Synced with staleness bound %v", c.Name, r.Resource, r.StalenessSeconds)
			}
		}
	}
	// The Widget CRD exists only in some clusters; the others report it as not served.
	for _, c := range fleet.Clusters {
		r, ok := resourceStatus(f, c.Name, "widgets.example.com")
		want := clusters.PhaseSynced
		if !testfleet.HasWidgets(c.Index) {
			want = clusters.PhaseNotServed
		}
		if !ok || r.Phase != want {
			t.Errorf("%s/widgets.example.com: %v (%+v), want %s", c.Name, ok, r, want)
		}
	}
}

func TestCRDInstalledLaterIsPickedUp(t *testing.T) {
	seeded(t)
	var late *testfleet.Cluster
	for _, c := range fleet.Clusters {
		if !testfleet.HasWidgets(c.Index) {
			late = c
		}
	}
	path, filter := readerKubeconfig(t)
	f := startFleet(t, clusters.KubeconfigSource{Paths: []string{path}, Filter: filter}, fastOptions("pods", "widgets.example.com"))
	eventually(t, 30*time.Second, late.Name+" synced", phaseIs(f, late.Name, clusters.PhaseSynced))
	if r, _ := resourceStatus(f, late.Name, "widgets.example.com"); r.Phase != clusters.PhaseNotServed {
		t.Fatalf("before the CRD: widgets in %s are %s, want NotServed", late.Name, r.Phase)
	}

	// Install the CRD and two widgets the way Seed does for other clusters.
	ctx := context.Background()
	dyn := dynamic.NewForConfigOrDie(late.AdminConfig())
	crds := dyn.Resource(schemaCRD)
	if _, err := crds.Create(ctx, testfleet.WidgetCRD(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = crds.Delete(ctx, testfleet.WidgetCRDName, metav1.DeleteOptions{}) })
	for _, name := range []string{"late-1", "late-2"} {
		w := widget("default", name)
		eventually(t, 20*time.Second, "create widget", func() (bool, string) {
			_, err := dyn.Resource(testfleet.WidgetGVR).Namespace("default").Create(ctx, w, metav1.CreateOptions{})
			return err == nil, fmt.Sprint(err)
		})
	}
	eventually(t, 20*time.Second, "widgets cached from "+late.Name, func() (bool, string) {
		r, _ := resourceStatus(f, late.Name, "widgets.example.com")
		return r.Phase == clusters.PhaseSynced && r.Objects == 2, fmt.Sprintf("%s with %d objects", r.Phase, r.Objects)
	})

	// Deleting the CRD takes its objects out of the cache again.
	if err := crds.Delete(ctx, testfleet.WidgetCRDName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "widgets dropped from "+late.Name, func() (bool, string) {
		r, _ := resourceStatus(f, late.Name, "widgets.example.com")
		return r.Phase == clusters.PhaseNotServed && r.Objects == 0, fmt.Sprintf("%s with %d objects", r.Phase, r.Objects)
	})
}

func TestUnreachableAndUnauthorizedContexts(t *testing.T) {
	seeded(t)
	a := fleet.Clusters[0]
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["good"] = &clientcmdapi.Cluster{Server: a.Server(), CertificateAuthorityData: a.CAData()}
	cfg.Clusters["nowhere"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1", CertificateAuthorityData: a.CAData()}
	cfg.AuthInfos["reader"] = &clientcmdapi.AuthInfo{Token: a.ReaderToken()}
	cfg.AuthInfos["forged"] = &clientcmdapi.AuthInfo{Token: "not-a-valid-token"}
	cfg.Contexts["ok"] = &clientcmdapi.Context{Cluster: "good", AuthInfo: "reader"}
	cfg.Contexts["dead"] = &clientcmdapi.Context{Cluster: "nowhere", AuthInfo: "reader"}
	cfg.Contexts["badcreds"] = &clientcmdapi.Context{Cluster: "good", AuthInfo: "forged"}
	cfg.Contexts["broken"] = &clientcmdapi.Context{Cluster: "missing-cluster", AuthInfo: "reader"}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	f := startFleet(t, clusters.KubeconfigSource{Paths: []string{path}}, fastOptions("pods", "configmaps"))

	eventually(t, 30*time.Second, "ok synced", phaseIs(f, "ok", clusters.PhaseSynced))
	eventually(t, 30*time.Second, "dead unreachable", phaseIs(f, "dead", clusters.PhaseUnreachable))
	eventually(t, 30*time.Second, "badcreds unauthorized", phaseIs(f, "badcreds", clusters.PhaseUnauthorized))
	eventually(t, 30*time.Second, "broken invalid", phaseIs(f, "broken", clusters.PhaseInvalid))

	for name, want := range map[string]string{"dead": "connection refused", "badcreds": "Unauthorized", "broken": "missing-cluster"} {
		if s := f.Cluster(name).Status(); !strings.Contains(s.Message, want) {
			t.Errorf("%s: message %q does not say %q", name, s.Message, want)
		}
	}
	// The healthy cluster keeps following changes while the others fail.
	cs := kubernetes.NewForConfigOrDie(a.AdminConfig())
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "while-others-fail", Namespace: "default"}}
	before, _ := resourceStatus(f, "ok", "configmaps")
	if _, err := cs.CoreV1().ConfigMaps("default").Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().ConfigMaps("default").Delete(context.Background(), cm.Name, metav1.DeleteOptions{})
	})
	eventually(t, 10*time.Second, "new configmap cached", func() (bool, string) {
		r, _ := resourceStatus(f, "ok", "configmaps")
		return r.Objects == before.Objects+1, fmt.Sprintf("%d objects, want %d", r.Objects, before.Objects+1)
	})
}

func TestStoppedClusterLeavesSyncedAndComesBack(t *testing.T) {
	seeded(t)
	path, filter := readerKubeconfig(t)
	f := startFleet(t, clusters.KubeconfigSource{Paths: []string{path}, Filter: filter}, fastOptions(testResources...))
	for _, c := range fleet.Clusters {
		eventually(t, 30*time.Second, c.Name+" synced", phaseIs(f, c.Name, clusters.PhaseSynced))
	}
	victim, other := fleet.Clusters[2], fleet.Clusters[0]
	if err := victim.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := true
	t.Cleanup(func() {
		if stopped {
			_ = victim.Cont()
		}
	})
	eventually(t, 30*time.Second, victim.Name+" leaves Synced", func() (bool, string) {
		s := f.Cluster(victim.Name).Status()
		return s.Phase != clusters.PhaseSynced, "still " + string(s.Phase)
	})
	if s := f.Cluster(victim.Name).Status(); s.Phase != clusters.PhaseUnreachable {
		t.Errorf("stopped cluster is %s (%s), want Unreachable", s.Phase, s.Message)
	}

	// The others keep following their clusters.
	cs := kubernetes.NewForConfigOrDie(other.AdminConfig())
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "during-stop", Namespace: "default"}}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().ConfigMaps("default").Delete(context.Background(), cm.Name, metav1.DeleteOptions{})
	})
	assertCountsMatchKubectl(t, f, other.Name)

	if err := victim.Cont(); err != nil {
		t.Fatal(err)
	}
	stopped = false
	eventually(t, 30*time.Second, victim.Name+" back to Synced", phaseIs(f, victim.Name, clusters.PhaseSynced))
	assertCountsMatchKubectl(t, f, victim.Name)
}

func TestKubeconfigEditsApplyWithoutRestart(t *testing.T) {
	seeded(t)
	path, filter := readerKubeconfig(t)
	raw, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := fleet.Clusters[0].Name, fleet.Clusters[1].Name, fleet.Clusters[2].Name
	write := func(mutate func(*clientcmdapi.Config)) {
		t.Helper()
		cp := raw.DeepCopy()
		mutate(cp)
		if err := clientcmd.WriteToFile(*cp, path); err != nil {
			t.Fatal(err)
		}
	}
	// Start with a and b only.
	write(func(k *clientcmdapi.Config) { delete(k.Contexts, c+"-reader") })
	f := startFleet(t, clusters.KubeconfigSource{Paths: []string{path}, Filter: filter}, fastOptions("pods", "configmaps"))
	eventually(t, 30*time.Second, a+" synced", phaseIs(f, a, clusters.PhaseSynced))
	eventually(t, 30*time.Second, b+" synced", phaseIs(f, b, clusters.PhaseSynced))
	if f.Cluster(c) != nil {
		t.Fatalf("%s cached although not in the kubeconfig", c)
	}
	keptA := f.Cluster(a)

	// Add c, remove b.
	write(func(k *clientcmdapi.Config) { delete(k.Contexts, b+"-reader") })
	eventually(t, 30*time.Second, c+" added and synced", phaseIs(f, c, clusters.PhaseSynced))
	eventually(t, 10*time.Second, b+" removed", func() (bool, string) { return f.Cluster(b) == nil, "still there" })
	if f.Cluster(a) != keptA {
		t.Errorf("%s was restarted although its entry did not change", a)
	}
	keptC := f.Cluster(c)

	// Change a's token to a wrong one: a restarts and reports Unauthorized; c is untouched.
	write(func(k *clientcmdapi.Config) {
		delete(k.Contexts, b+"-reader")
		k.AuthInfos[a+"-reader"].Token = "revoked"
	})
	eventually(t, 30*time.Second, a+" unauthorized", phaseIs(f, a, clusters.PhaseUnauthorized))
	if f.Cluster(a) == keptA {
		t.Errorf("%s was not restarted after its token changed", a)
	}
	if f.Cluster(c) != keptC {
		t.Errorf("%s was restarted although its entry did not change", c)
	}
	for _, s := range f.Status() {
		if s.Name == b {
			t.Errorf("removed cluster %s still reported", b)
		}
	}

	// A broken file keeps the running clusters and reports the error.
	if err := os.WriteFile(path, []byte("not: [valid"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "load error reported", func() (bool, string) { return f.LoadError() != nil, "no error" })
	if f.Cluster(c) != keptC {
		t.Errorf("a broken kubeconfig restarted %s", c)
	}
}

func TestSecretValuesNeverCached(t *testing.T) {
	seeded(t)
	path, filter := readerKubeconfig(t)
	opts := fastOptions("secrets")
	rec := newRecorder()
	opts.Cluster.Handler = rec
	opts.Cluster.SecretAnnotations = []string{"example.com/owner"}
	f := startFleet(t, clusters.KubeconfigSource{Paths: []string{path}, Filter: filter}, opts)
	a := fleet.Clusters[0]
	eventually(t, 30*time.Second, a.Name+" synced", phaseIs(f, a.Name, clusters.PhaseSynced))

	// A secret written after the sync arrives through the watch, not the list.
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(a.AdminConfig())
	value := []byte("s3cr3t-value-" + fmt.Sprint(time.Now().UnixNano()))
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "watched-secret", Namespace: "default", Annotations: map[string]string{
			corev1.LastAppliedConfigAnnotation: `{"data":{"token":"` + string(value) + `"}}`,
			// kapp keeps the whole applied manifest, values included, in one of its own.
			"kapp.k14s.io/original": `{"apiVersion":"v1","kind":"Secret","stringData":{"token":"` + string(value) + `"}}`,
			"example.com/owner":     "team-payments", // allow-listed by the operator: kept
		}},
		Data:       map[string][]byte{"token": value},
		StringData: map[string]string{"other": string(value)},
	}
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Secrets("default").Delete(ctx, sec.Name, metav1.DeleteOptions{}) })
	listed, err := cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	secretValues := [][]byte{value}
	for _, s := range listed.Items {
		for _, v := range s.Data {
			if len(v) >= 6 {
				secretValues = append(secretValues, v)
			}
		}
	}

	var found *clusters.Object
	eventually(t, 10*time.Second, "watched secret cached", func() (bool, string) {
		found = rec.get(a.Name + "/default/watched-secret")
		return found != nil, "not yet"
	})
	checked := 0
	{
		for _, obj := range rec.objects(a.Name) {
			decoded, err := obj.Decode()
			if err != nil {
				t.Fatal(err)
			}
			s := decoded.(*corev1.Secret)
			for k, v := range s.Data {
				if len(v) != 0 {
					t.Errorf("secret %s/%s key %s kept a value", s.Namespace, s.Name, k)
				}
			}
			if len(s.StringData) != 0 {
				t.Errorf("secret %s/%s kept stringData", s.Namespace, s.Name)
			}
			for _, v := range secretValues {
				if bytes.Contains(obj.Raw(), v) {
					t.Errorf("secret %s/%s: cached bytes contain a secret value", s.Namespace, s.Name)
				}
			}
			checked++
		}
	}
	if checked < len(listed.Items) {
		t.Errorf("checked %d cached secrets, the cluster has %d", checked, len(listed.Items))
	}
	decoded, _ := found.Decode()
	if _, ok := decoded.(*corev1.Secret).Data["token"]; !ok {
		t.Error("the key name of the watched secret was dropped; key names should stay")
	}
	ann := decoded.(*corev1.Secret).Annotations
	if v, ok := ann["kapp.k14s.io/original"]; !ok || v != "" {
		t.Errorf("kapp's annotation: %q (present %v), want its key with an empty value", v, ok)
	}
	if ann["example.com/owner"] != "team-payments" {
		t.Errorf("the allow-listed annotation is %q, want its value kept", ann["example.com/owner"])
	}
}

// recorder is an EventHandler that keeps what the clusters deliver, as the index does.
type recorder struct {
	mu   sync.Mutex
	objs map[string]*clusters.Object // cluster/namespace/name
}

func newRecorder() *recorder { return &recorder{objs: map[string]*clusters.Object{}} }

func (r *recorder) OnAdd(ref *clusters.InformerRef, obj *clusters.Object) { r.put(ref, obj) }
func (r *recorder) OnUpdate(ref *clusters.InformerRef, _, obj *clusters.Object) {
	r.put(ref, obj)
}
func (r *recorder) OnDelete(ref *clusters.InformerRef, obj *clusters.Object) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.objs, ref.Cluster+"/"+obj.Namespace+"/"+obj.Name)
}
func (r *recorder) OnStop(*clusters.InformerRef) {}
func (r *recorder) OnFleet(clusters.FleetView)   {}

func (r *recorder) put(ref *clusters.InformerRef, obj *clusters.Object) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.objs[ref.Cluster+"/"+obj.Namespace+"/"+obj.Name] = obj
}

func (r *recorder) get(key string) *clusters.Object {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.objs[key]
}

func (r *recorder) objects(cluster string) []*clusters.Object {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*clusters.Object
	for k, o := range r.objs {
		if strings.HasPrefix(k, cluster+"/") {
			out = append(out, o)
		}
	}
	return out
}

var schemaCRD = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func widget(ns, name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.com/v1",
		"kind":       "Widget",
		"metadata":   map[string]any{"namespace": ns, "name": name},
		"spec":       map[string]any{"color": "teal", "size": int64(3)},
	}}
}

func TestForbiddenResourcesAreReported(t *testing.T) {
	seeded(t)
	victim := fleet.Clusters[1]
	ctx := context.Background()
	if err := victim.UnbindReader(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = victim.BindReader(ctx) })
	path, filter := readerKubeconfig(t)
	f := startFleet(t, clusters.KubeconfigSource{Paths: []string{path}, Filter: filter}, fastOptions("pods", "configmaps"))
	eventually(t, 30*time.Second, victim.Name+" forbidden", phaseIs(f, victim.Name, clusters.PhaseForbidden))
	r, _ := resourceStatus(f, victim.Name, "pods")
	if r.Phase != clusters.PhaseForbidden || !strings.Contains(r.Message, "forbidden") {
		t.Errorf("pods in %s: %s %q, want Forbidden with the apiserver's message", victim.Name, r.Phase, r.Message)
	}
	for _, c := range fleet.Clusters {
		if c != victim {
			eventually(t, 30*time.Second, c.Name+" synced", phaseIs(f, c.Name, clusters.PhaseSynced))
		}
	}
	// Restoring the binding lets the retrying informers in (client-go backs off up to 30s).
	if err := victim.BindReader(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, victim.Name+" synced after the binding is back", phaseIs(f, victim.Name, clusters.PhaseSynced))
}

// TestIdleResourcesStayProven: with no writes at all, a cluster's resources stay Synced,
// proven current within staleAfter, through several idle proof intervals, from the
// initial sync on. (With an interval long against the probe interval, as the defaults
// are: the first proof after a watch-list sync once came after two intervals, past
// staleAfter.)
func TestIdleResourcesStayProven(t *testing.T) {
	seeded(t)
	path, filter := readerKubeconfig(t)
	filter.Include = []string{fleet.Clusters[1].Name + "-reader"}
	opts := fastOptions("namespaces", "nodes")
	opts.Cluster.IdleProofInterval = 12 * time.Second
	opts.Cluster.StaleAfter = 0 // the default: 12s + 2 x 1s + 5s
	f := startFleet(t, clusters.KubeconfigSource{Paths: []string{path}, Filter: filter}, opts)
	name := fleet.Clusters[1].Name
	eventually(t, 30*time.Second, "synced", phaseIs(f, name, clusters.PhaseSynced))
	deadline := time.Now().Add(30 * time.Second)
	worst := 0.0
	for time.Now().Before(deadline) {
		s := f.Cluster(name).Status()
		for _, r := range s.Resources {
			if r.Phase != clusters.PhaseSynced || r.StalenessSeconds == nil || *r.StalenessSeconds > 19 {
				t.Fatalf("%s left Synced while idle: %s %s %s (staleness %v)", r.Resource, r.Phase, r.Reason, r.Message, r.StalenessSeconds)
			}
			worst = max(worst, *r.StalenessSeconds)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("largest staleness bound over 30s idle: %.1fs (idle proof interval 12s, staleAfter 19s)", worst)
}

// TestUnchangedDiscoveryIsNotResolvedAgain: rediscovery keeps asking the apiserver, but
// documents that did not change are not downloaded again (their ETags answer 304), and
// the last resolution is reused (no RESTMapper built again).
func TestUnchangedDiscoveryIsNotResolvedAgain(t *testing.T) {
	seeded(t)
	path, filter := readerKubeconfig(t)
	name := fleet.Clusters[0].Name
	filter.Include = []string{name + "-reader"}
	opts := fastOptions(testResources...)
	opts.Cluster.RediscoveryInterval = 200 * time.Millisecond
	f := startFleet(t, clusters.KubeconfigSource{Paths: []string{path}, Filter: filter}, opts)
	eventually(t, 30*time.Second, "synced", phaseIs(f, name, clusters.PhaseSynced))
	c := f.Cluster(name)
	resolved, downloaded, asked := c.Resolutions(), c.Downloads(), c.Status().DiscoveryRequests
	eventually(t, 30*time.Second, "three more discovery rounds", func() (bool, string) {
		n := c.Status().DiscoveryRequests
		return n >= asked+6, fmt.Sprintf("%d discovery requests since", n-asked)
	})
	if n := c.Resolutions(); n != resolved {
		t.Errorf("resolved %d more times although discovery did not change", n-resolved)
	}
	if n := c.Downloads(); n != downloaded {
		t.Errorf("downloaded the discovery documents %d more times although they did not change", n-downloaded)
	}
	if resolved == 0 {
		t.Error("never resolved")
	}
}
