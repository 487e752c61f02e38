package kubeapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/auth"
	"github.com/fleetcache/fleetcache/internal/kubeapi"
	"github.com/fleetcache/fleetcache/internal/request"
)

// twoClusters is two clusters, a (v1.31.2) and b (v1.30.1), both Synced; b does not serve
// widgets.example.com. It is both the Index's FreshnessSource and the Handler's Fleet.
type twoClusters struct{}

func (twoClusters) Names() []string { return []string{"a", "b"} }
func (twoClusters) Loaded() bool    { return true }
func (twoClusters) Freshness(cluster, resource string) (clusters.Freshness, bool) {
	if cluster != "a" && cluster != "b" {
		return clusters.Freshness{}, false
	}
	f := clusters.Freshness{Phase: clusters.PhaseSynced, ResourcePhase: clusters.PhaseSynced, Proven: true, Staleness: time.Second}
	if cluster == "b" && resource == "widgets.example.com" {
		f.ResourcePhase, f.ResourceReason = clusters.PhaseNotServed, "NotFound"
	}
	return f, true
}

func (twoClusters) Version(cluster string) (string, bool) {
	switch cluster {
	case "a":
		return "v1.31.2", true
	case "b":
		return "v1.30.1", true
	}
	return "", false
}

type apiFixture struct {
	t    *testing.T
	ix   *aggregator.Index
	pods *clusters.Compactor
	refs map[string]*clusters.InformerRef
	rv   int
}

func (f *apiFixture) ref(cluster, resource string) *clusters.InformerRef {
	key := cluster + "/" + resource
	if f.refs[key] == nil {
		r := &clusters.InformerRef{Cluster: cluster, Resource: resource, ID: uint64(len(f.refs) + 1), Namespaced: true, APIVersion: "v1"}
		switch resource {
		case "pods":
			r.Kind, r.Names, r.Singular, r.ShortNames = "Pod", []string{"pods", "pod", "po"}, "pod", []string{"po"}
		case "secrets":
			r.Kind, r.Names, r.Singular = "Secret", []string{"secrets", "secret"}, "secret"
		case "widgets.example.com":
			r.Kind, r.APIVersion, r.Names, r.Singular = "Widget", "example.com/v1", []string{"widgets", "widget"}, "widget"
		}
		f.refs[key] = r
	}
	return f.refs[key]
}

func (f *apiFixture) pod(ns, name, node string) *clusters.Object {
	f.t.Helper()
	f.rv++
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), ResourceVersion: fmt.Sprint(f.rv), Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "img"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	o, err := f.pods.Compact(p)
	if err != nil {
		f.t.Fatal(err)
	}
	return o
}

func (f *apiFixture) compact(gvk schema.GroupVersionKind, resource string, obj interface {
	GetName() string
}) *clusters.Object {
	f.t.Helper()
	c, err := clusters.NewCompactor(gvk, resource)
	if err != nil {
		f.t.Fatal(err)
	}
	var o *clusters.Object
	switch v := obj.(type) {
	case *corev1.Secret:
		o, err = c.Compact(v)
	case *unstructured.Unstructured:
		o, err = c.Compact(v)
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return o
}

// newAPIFixture indexes pods p1 (a, web), p2 (a, web), p3 (b, api), a Secret in a and a
// Widget in a.
func newAPIFixture(t *testing.T) *apiFixture {
	pods, err := clusters.NewCompactor(corev1.SchemeGroupVersion.WithKind("Pod"), "pods")
	if err != nil {
		t.Fatal(err)
	}
	f := &apiFixture{t: t, ix: aggregator.New(twoClusters{}, aggregator.Options{}), pods: pods, refs: map[string]*clusters.InformerRef{}}
	f.ix.OnAdd(f.ref("a", "pods"), f.pod("web", "p1", "n1"))
	f.ix.OnAdd(f.ref("a", "pods"), f.pod("web", "p2", "n2"))
	f.ix.OnAdd(f.ref("b", "pods"), f.pod("api", "p3", "n3"))
	f.rv++
	f.ix.OnAdd(f.ref("a", "secrets"), f.compact(corev1.SchemeGroupVersion.WithKind("Secret"), "secrets",
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "tls", ResourceVersion: fmt.Sprint(f.rv)}, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"tls.key": []byte("private")}}))
	f.rv++
	w := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.com/v1", "kind": "Widget",
		"metadata": map[string]any{"name": "w1", "namespace": "web", "resourceVersion": fmt.Sprint(f.rv)},
		"spec":     map[string]any{"size": int64(3)},
	}}
	f.ix.OnAdd(f.ref("a", "widgets.example.com"), f.compact(schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Widget"}, "widgets.example.com", w))
	return f
}

func (f *apiFixture) serve(h *kubeapi.Handler) *httptest.Server {
	h.Index, h.Fleet = f.ix, twoClusters{}
	mux := http.NewServeMux()
	h.Register(mux, nil)
	srv := httptest.NewServer(mux)
	f.t.Cleanup(srv.Close)
	return srv
}

func httpGet(t *testing.T, url, accept string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func decodeJSON(t *testing.T, body []byte, into any) {
	t.Helper()
	if err := json.Unmarshal(body, into); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
}

// served lists group/version/resource as client-go's discovery client sees them.
func discovered(t *testing.T, host string) []string {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(&rest.Config{Host: host})
	if err != nil {
		t.Fatal(err)
	}
	_, lists, err := dc.ServerGroupsAndResources()
	if err != nil {
		t.Fatalf("discovery of %s: %v", host, err)
	}
	var out []string
	for _, l := range lists {
		for _, r := range l.APIResources {
			if !slices.Equal(r.Verbs, []string{"get", "list", "watch"}) {
				t.Errorf("%s %s: verbs %v, want get, list, watch", l.GroupVersion, r.Name, r.Verbs)
			}
			out = append(out, l.GroupVersion+"/"+r.Name)
		}
	}
	sort.Strings(out)
	return out
}

func TestDiscoveryListsExactlyTheIndexedResources(t *testing.T) {
	f := newAPIFixture(t)
	srv := f.serve(&kubeapi.Handler{})
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/fleet", []string{"example.com/v1/widgets", "v1/pods"}},
		{"/clusters/a", []string{"example.com/v1/widgets", "v1/pods"}},
		{"/clusters/b", []string{"v1/pods"}}, // b does not serve widgets
	} {
		if got := discovered(t, srv.URL+tc.path); !slices.Equal(got, tc.want) {
			t.Errorf("%s: discovery lists %v, want %v", tc.path, got, tc.want)
		}
	}

	// Aggregated discovery, as client-go asks for it.
	code, body := httpGet(t, srv.URL+"/clusters/a/apis", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json")
	if code != http.StatusOK {
		t.Fatalf("aggregated /apis: %d %s", code, body)
	}
	var agg apidiscoveryv2.APIGroupDiscoveryList
	decodeJSON(t, body, &agg)
	var groups []string
	for _, g := range agg.Items {
		for _, v := range g.Versions {
			for _, r := range v.Resources {
				groups = append(groups, g.Name+"/"+v.Version+"/"+r.Resource+"/"+r.ResponseKind.Kind)
			}
		}
	}
	if !slices.Equal(groups, []string{"example.com/v1/widgets/Widget"}) {
		t.Errorf("aggregated /apis of a lists %v, want [example.com/v1/widgets/Widget]", groups)
	}

	// Legacy documents.
	code, body = httpGet(t, srv.URL+"/clusters/a/api", "application/json")
	var versions metav1.APIVersions
	decodeJSON(t, body, &versions)
	if code != http.StatusOK || !slices.Equal(versions.Versions, []string{"v1"}) {
		t.Errorf("/api: %d %+v, want versions [v1]", code, versions)
	}
	code, body = httpGet(t, srv.URL+"/clusters/b/apis", "application/json")
	var gl metav1.APIGroupList
	decodeJSON(t, body, &gl)
	if code != http.StatusOK || len(gl.Groups) != 0 {
		t.Errorf("/apis of b: %d %+v, want no groups", code, gl.Groups)
	}
	code, body = httpGet(t, srv.URL+"/clusters/a/api/v1", "application/json")
	var rl metav1.APIResourceList
	decodeJSON(t, body, &rl)
	if code != http.StatusOK || len(rl.APIResources) != 1 || rl.APIResources[0].Name != "pods" || rl.APIResources[0].Kind != "Pod" || !rl.APIResources[0].Namespaced {
		t.Errorf("/api/v1: %d %+v, want only pods (Pod, namespaced)", code, rl.APIResources)
	}
}

func TestVersionIsTheOldestCluster(t *testing.T) {
	f := newAPIFixture(t)
	srv := f.serve(&kubeapi.Handler{})
	for path, want := range map[string]string{"/clusters/a/version": "v1.31.2", "/clusters/b/version": "v1.30.1", "/fleet/version": "v1.30.1"} {
		dc, err := discovery.NewDiscoveryClientForConfig(&rest.Config{Host: srv.URL + strings.TrimSuffix(path, "/version")})
		if err != nil {
			t.Fatal(err)
		}
		v, err := dc.ServerVersion()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if v.GitVersion != want || v.Major != "1" || v.Minor != strings.Split(want, ".")[1] {
			t.Errorf("%s: %+v, want %s", path, v, want)
		}
	}
}

func TestSecretsHiddenUnlessServed(t *testing.T) {
	f := newAPIFixture(t)
	hidden := f.serve(&kubeapi.Handler{})
	shown := f.serve(&kubeapi.Handler{Pipeline: request.New(f.ix, request.Options{ServeSecrets: true})})
	if got := discovered(t, hidden.URL+"/clusters/a"); slices.Contains(got, "v1/secrets") {
		t.Errorf("discovery lists secrets without ServeSecrets: %v", got)
	}
	if code, body := httpGet(t, hidden.URL+"/clusters/a/api/v1/namespaces/web/secrets", ""); code != http.StatusNotFound {
		t.Errorf("secrets list without ServeSecrets: %d %s, want 404", code, body)
	}
	if code, body := httpGet(t, hidden.URL+"/fleet/api/v1/namespaces/web/secrets/tls", ""); code != http.StatusNotFound {
		t.Errorf("secret get without ServeSecrets: %d %s, want 404", code, body)
	}
	if got := discovered(t, shown.URL+"/clusters/a"); !slices.Contains(got, "v1/secrets") {
		t.Errorf("discovery does not list secrets with ServeSecrets: %v", got)
	}
	code, body := httpGet(t, shown.URL+"/clusters/a/api/v1/namespaces/web/secrets", "application/json")
	var list corev1.SecretList
	decodeJSON(t, body, &list)
	if code != http.StatusOK || len(list.Items) != 1 || list.Items[0].Name != "tls" {
		t.Fatalf("secrets list with ServeSecrets: %d %s", code, body)
	}
	// Key names are served, values never.
	if v, ok := list.Items[0].Data["tls.key"]; !ok || len(v) != 0 || strings.Contains(string(body), "cHJpdmF0ZQ") { // cHJpdmF0ZQ: base64 of the value
		t.Errorf("served secret: %s, want the key tls.key without its value", body)
	}
}

func TestNotFoundAndReadOnly(t *testing.T) {
	f := newAPIFixture(t)
	srv := f.serve(&kubeapi.Handler{})
	for _, tc := range []struct{ what, path string }{
		{"uncached resource", "/clusters/a/api/v1/services"},
		{"uncached resource on the fleet", "/fleet/api/v1/namespaces/web/configmaps"},
		{"subresource", "/clusters/a/api/v1/namespaces/web/pods/p1/log"},
		{"subresource status", "/fleet/api/v1/namespaces/web/pods/p1/status"},
		{"resource not served by the cluster", "/clusters/b/apis/example.com/v1/namespaces/web/widgets"},
		{"wrong version", "/clusters/a/apis/example.com/v2/widgets"},
		{"unknown cluster", "/clusters/zzz/api/v1/pods"},
		{"missing object", "/clusters/a/api/v1/namespaces/web/pods/nope"},
		{"object in another cluster", "/clusters/b/api/v1/namespaces/web/pods/p1"},
	} {
		code, body := httpGet(t, srv.URL+tc.path, "")
		var st metav1.Status
		decodeJSON(t, body, &st)
		if code != http.StatusNotFound || st.Kind != "Status" || st.Reason != metav1.StatusReasonNotFound {
			t.Errorf("%s (%s): %d %s, want a 404 Status", tc.what, tc.path, code, body)
		}
	}

	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		req, _ := http.NewRequest(method, srv.URL+"/clusters/a/api/v1/namespaces/web/pods/p1", strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var st metav1.Status
		decodeJSON(t, body, &st)
		if resp.StatusCode != http.StatusMethodNotAllowed || st.Reason != metav1.StatusReasonMethodNotAllowed || !strings.Contains(st.Message, "read-only") {
			t.Errorf("%s: %d %s, want a 405 read-only Status", method, resp.StatusCode, body)
		}
	}
	// As client-go reports it.
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL + "/clusters/a"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.CoreV1().Pods("web").Create(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "new"}}, metav1.CreateOptions{})
	if !apierrors.IsMethodNotSupported(err) {
		t.Errorf("client-go create: %v, want MethodNotSupported", err)
	}
}

func TestListsCarryTheClusterAnnotation(t *testing.T) {
	f := newAPIFixture(t)
	srv := f.serve(&kubeapi.Handler{})
	dyn, err := dynamic.NewForConfig(&rest.Config{Host: srv.URL + "/fleet"})
	if err != nil {
		t.Fatal(err)
	}
	pods := schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	list, err := dyn.Resource(pods).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range list.Items {
		got = append(got, it.GetAnnotations()[kubeapi.ClusterAnnotation]+"/"+it.GetNamespace()+"/"+it.GetName())
	}
	sort.Strings(got)
	if want := []string{"a/web/p1", "a/web/p2", "b/api/p3"}; !slices.Equal(got, want) {
		t.Errorf("fleet pods: %v, want %v", got, want)
	}
	if list.GetResourceVersion() == "" {
		t.Error("a list without resourceVersion")
	}

	// One cluster, typed client (protobuf), a label and field selector.
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL + "/clusters/a"})
	if err != nil {
		t.Fatal(err)
	}
	pl, err := cs.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{LabelSelector: "app=web", FieldSelector: "spec.nodeName=n2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pl.Items) != 1 || pl.Items[0].Name != "p2" || pl.Items[0].Annotations[kubeapi.ClusterAnnotation] != "a" || pl.Items[0].Spec.NodeName != "n2" {
		t.Errorf("cluster a, node n2: %+v", pl.Items)
	}
	p, err := cs.CoreV1().Pods("web").Get(context.Background(), "p1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Annotations[kubeapi.ClusterAnnotation] != "a" || p.Spec.NodeName != "n1" {
		t.Errorf("get p1: annotations %v, node %q", p.Annotations, p.Spec.NodeName)
	}
	// The cached object itself is not annotated (handed out objects are copies).
	it, err := f.ix.Get("a", "pods", "web", "p1")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := it.Object.Annotations[kubeapi.ClusterAnnotation]; ok {
		t.Error("serving annotated the cached object")
	}

	w, err := dyn.Resource(schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "widgets"}).Namespace("web").Get(context.Background(), "w1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if size, _, _ := unstructured.NestedInt64(w.Object, "spec", "size"); size != 3 || w.GetAnnotations()[kubeapi.ClusterAnnotation] != "a" {
		t.Errorf("widget: %v", w.Object)
	}
}

func TestTableHasTheClusterColumn(t *testing.T) {
	f := newAPIFixture(t)
	srv := f.serve(&kubeapi.Handler{})
	code, body := httpGet(t, srv.URL+"/fleet/api/v1/pods", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
	if code != http.StatusOK {
		t.Fatalf("table: %d %s", code, body)
	}
	var tbl metav1.Table
	decodeJSON(t, body, &tbl)
	if tbl.Kind != "Table" || len(tbl.ColumnDefinitions) < 3 || tbl.ColumnDefinitions[0].Name != "Cluster" || tbl.ColumnDefinitions[1].Name != "Name" {
		t.Fatalf("table columns %+v, want Cluster, Name, ...", tbl.ColumnDefinitions)
	}
	var rows []string
	for _, r := range tbl.Rows {
		if len(r.Cells) != len(tbl.ColumnDefinitions) {
			t.Errorf("row %v has %d cells for %d columns", r.Cells, len(r.Cells), len(tbl.ColumnDefinitions))
		}
		var pom metav1.PartialObjectMetadata
		decodeJSON(t, r.Object.Raw, &pom)
		if pom.Annotations[kubeapi.ClusterAnnotation] != r.Cells[0] || pom.Name != r.Cells[1] {
			t.Errorf("row %v: object metadata %s/%s (cluster %q)", r.Cells[:2], pom.Namespace, pom.Name, pom.Annotations[kubeapi.ClusterAnnotation])
		}
		rows = append(rows, fmt.Sprint(r.Cells[0], "/", r.Cells[1]))
	}
	sort.Strings(rows)
	if want := []string{"a/p1", "a/p2", "b/p3"}; !slices.Equal(rows, want) {
		t.Errorf("table rows %v, want %v", rows, want)
	}
	// A get as a table is a one-row table.
	code, body = httpGet(t, srv.URL+"/clusters/b/api/v1/namespaces/api/pods/p3", "application/json;as=Table;v=v1;g=meta.k8s.io")
	decodeJSON(t, body, &tbl)
	if code != http.StatusOK || len(tbl.Rows) != 1 || tbl.Rows[0].Cells[0] != "b" || tbl.Rows[0].Cells[1] != "p3" {
		t.Errorf("table get: %d %s", code, body)
	}
}

func TestWatchOfANamedObjectStreams(t *testing.T) {
	f := newAPIFixture(t)
	srv := f.serve(&kubeapi.Handler{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// kubectl get pod p1 -w asks this way: watch=1 on the object's own path.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/clusters/a/api/v1/namespaces/web/pods/p1?watch=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("watch: %d %s", resp.StatusCode, b)
	}
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	next := func() (string, *corev1.Pod) {
		t.Helper()
		var ev struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("reading the watch: %v", err)
		}
		var p corev1.Pod
		decodeJSON(t, ev.Object, &p)
		return ev.Type, &p
	}
	typ, p := next()
	if typ != "ADDED" || p.Name != "p1" || p.Annotations[kubeapi.ClusterAnnotation] != "a" {
		t.Fatalf("first event %s %s/%s (%v), want ADDED web/p1 of a", typ, p.Namespace, p.Name, p.Annotations)
	}
	// A change of another pod is not part of this watch; p1's is.
	old2, _ := f.ix.Get("a", "pods", "web", "p2")
	f.ix.OnUpdate(f.ref("a", "pods"), old2.Object, f.pod("web", "p2", "n9"))
	old1, _ := f.ix.Get("a", "pods", "web", "p1")
	f.ix.OnUpdate(f.ref("a", "pods"), old1.Object, f.pod("web", "p1", "n7"))
	typ, p = next()
	if typ != "MODIFIED" || p.Name != "p1" || p.Spec.NodeName != "n7" {
		t.Errorf("second event %s %s (node %s), want MODIFIED p1 on n7", typ, p.Name, p.Spec.NodeName)
	}
	cancel()
}

// An access review answers what the caller's scope may read: a user limited to one
// namespace may list pods there (and across namespaces, filtered), not in another
// namespace, and may not write.
func TestAccessReviewFollowsTheScope(t *testing.T) {
	f := newAPIFixture(t)
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(tokens, []byte("users:\n  - {name: team, token: team-token-0123456789, namespaces: [payments]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tf, err := auth.LoadTokenFile(tokens)
	if err != nil {
		t.Fatal(err)
	}
	h := &kubeapi.Handler{Index: f.ix, Fleet: twoClusters{}}
	mux := http.NewServeMux()
	h.Register(mux, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, err := tf.Authenticate(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r.WithContext(auth.WithUser(r.Context(), u)))
	}))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		verb, namespace string
		want            bool
	}{
		{"list", "payments", true},
		{"list", "", true},
		{"list", "search", false},
		{"delete", "payments", false},
	} {
		body := fmt.Sprintf(`{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":{"resourceAttributes":{"verb":%q,"resource":"pods","namespace":%q}}}`, tc.verb, tc.namespace)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/fleet/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer team-token-0123456789")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var review authorizationv1.SelfSubjectAccessReview
		err = json.NewDecoder(resp.Body).Decode(&review)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("%s pods in %q: HTTP %d, %v", tc.verb, tc.namespace, resp.StatusCode, err)
		}
		if review.Status.Allowed != tc.want || review.Status.Reason == "" {
			t.Errorf("%s pods in %q: allowed %v (%s), want %v", tc.verb, tc.namespace, review.Status.Allowed, review.Status.Reason, tc.want)
		}
	}
	// A review of the other kind is a 400 that names it.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/fleet/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
		strings.NewReader(`{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectRulesReview","spec":{"namespace":"payments"}}`))
	req.Header.Set("Authorization", "Bearer team-token-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(msg), "not a SelfSubjectRulesReview") {
		t.Errorf("a rules review posted as an access review: HTTP %d %s", resp.StatusCode, msg)
	}
}
