package aggregator

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"testing"
	"time"
	"weak"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fleetcache/fleetcache/clusters"
)

var podRef = func(cluster string, id uint64) *clusters.InformerRef {
	return &clusters.InformerRef{Cluster: cluster, Resource: "pods", Kind: "Pod", APIVersion: "v1", Namespaced: true, Names: []string{"pods", "pod", "po"}, ID: id}
}

type fixture struct {
	t   testing.TB
	ix  *Index
	c   *clusters.Compactor
	rv  int
	ref map[string]*clusters.InformerRef
}

func newFixture(t testing.TB, opts Options) *fixture {
	c, err := clusters.NewCompactor(corev1.SchemeGroupVersion.WithKind("Pod"), "pods")
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ix: New(nil, opts), c: c, ref: map[string]*clusters.InformerRef{}}
}

func (f *fixture) refFor(cluster string) *clusters.InformerRef {
	if f.ref[cluster] == nil {
		f.ref[cluster] = podRef(cluster, uint64(len(f.ref)+1))
	}
	return f.ref[cluster]
}

func (f *fixture) pod(ns, name, node string, phase corev1.PodPhase, lbls map[string]string) *clusters.Object {
	f.rv++
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls, ResourceVersion: fmt.Sprint(f.rv), UID: types.UID(ns + name)},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "img:" + name}}},
		Status:     corev1.PodStatus{Phase: phase},
	}
	o, err := f.c.Compact(p)
	if err != nil {
		f.t.Fatal(err)
	}
	return o
}

func (f *fixture) add(cluster string, o *clusters.Object) { f.ix.OnAdd(f.refFor(cluster), o) }

func names(items []Item) []string {
	var out []string
	for _, it := range items {
		out = append(out, it.Cluster+"/"+it.Object.Namespace+"/"+it.Object.Name)
	}
	return out
}

func seedFixture(t testing.TB) *fixture {
	f := newFixture(t, Options{})
	f.add("b", f.pod("web", "b1", "n1", "Running", map[string]string{"app": "web", "tier": "front"}))
	f.add("a", f.pod("web", "a2", "n2", "Pending", map[string]string{"app": "web"}))
	f.add("a", f.pod("api", "a1", "n1", "Running", map[string]string{"app": "api"}))
	f.add("a", f.pod("web", "a3", "n1", "Failed", nil))
	f.add("c", f.pod("api", "c1", "n3", "Running", map[string]string{"app": "api", "tier": "back"}))
	return f
}

func TestListSelectorsAndOrder(t *testing.T) {
	f := seedFixture(t)
	cases := []struct {
		name string
		q    Query
		want []string
	}{
		{"all, ordered by cluster/namespace/name", Query{}, []string{"a/api/a1", "a/web/a2", "a/web/a3", "b/web/b1", "c/api/c1"}},
		{"namespace", Query{Namespace: "web"}, []string{"a/web/a2", "a/web/a3", "b/web/b1"}},
		{"cluster glob", Query{Clusters: "[ab]"}, []string{"a/api/a1", "a/web/a2", "a/web/a3", "b/web/b1"}},
		{"label =", Query{LabelSelector: labels.SelectorFromSet(labels.Set{"app": "api"})}, []string{"a/api/a1", "c/api/c1"}},
		{"label !=", Query{LabelSelector: mustLabels(t, "app!=api")}, []string{"a/web/a2", "a/web/a3", "b/web/b1"}},
		{"label in", Query{LabelSelector: mustLabels(t, "tier in (front,back)")}, []string{"b/web/b1", "c/api/c1"}},
		{"label notin", Query{LabelSelector: mustLabels(t, "tier notin (front)")}, []string{"a/api/a1", "a/web/a2", "a/web/a3", "c/api/c1"}},
		{"label exists", Query{LabelSelector: mustLabels(t, "tier")}, []string{"b/web/b1", "c/api/c1"}},
		{"label does not exist", Query{LabelSelector: mustLabels(t, "!app")}, []string{"a/web/a3"}},
		{"indexed field", Query{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", "n1")}, []string{"a/api/a1", "a/web/a3", "b/web/b1"}},
		{"indexed field !=", Query{FieldSelector: mustFields(t, "status.phase!=Running")}, []string{"a/web/a2", "a/web/a3"}},
		{"unindexed field (decoded)", Query{FieldSelector: fields.OneTermEqualSelector("spec.containers", "")}, []string{"a/api/a1", "a/web/a2", "a/web/a3", "b/web/b1", "c/api/c1"}},
		{"metadata.name", Query{FieldSelector: fields.OneTermEqualSelector("metadata.name", "c1")}, []string{"c/api/c1"}},
		{"label and field", Query{LabelSelector: mustLabels(t, "app=web"), FieldSelector: fields.OneTermEqualSelector("status.phase", "Running")}, []string{"b/web/b1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.q.Resource = "pods"
			res, err := f.ix.List(context.Background(), tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(res.Items); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func mustLabels(t testing.TB, s string) labels.Selector {
	sel, err := labels.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

func mustFields(t testing.TB, s string) fields.Selector {
	sel, err := fields.ParseSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

func TestResourceNames(t *testing.T) {
	f := seedFixture(t)
	for _, name := range []string{"pods", "pod", "po"} {
		if res, err := f.ix.List(context.Background(), Query{Resource: name}); err != nil || len(res.Items) != 5 {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := f.ix.List(context.Background(), Query{Resource: "gizmos"}); !errors.Is(err, ErrUnknownResource) {
		t.Errorf("unknown resource: %v", err)
	}
	if _, err := f.ix.List(context.Background(), Query{Resource: "pods", Clusters: "zz"}); !errors.Is(err, ErrUnknownCluster) {
		t.Errorf("unknown cluster: %v", err)
	}
	if res, err := f.ix.List(context.Background(), Query{Resource: "pods", Clusters: "z*"}); err != nil || len(res.Items) != 0 {
		t.Errorf("a glob matching nothing is an empty answer, not an error: %v", err)
	}
}

// TestLearnAddsWhatNoInformerReported: a resource learnt from another replica resolves by
// every name it answers to, lists as empty, and never replaces what an informer reported.
func TestLearnAddsWhatNoInformerReported(t *testing.T) {
	f := seedFixture(t)
	widgets := ResourceInfo{Name: "widgets.example.com", Kind: "Widget", APIVersion: "example.com/v1", Namespaced: true,
		Aliases: []string{"widget", "widgets", "wg"}, Singular: "widget", ShortNames: []string{"wg"},
		Columns: []clusters.PrinterColumn{{Name: "Size", Type: "integer", JSONPath: ".spec.size"}}}
	if !f.ix.Learn(widgets) {
		t.Fatal("Learn: a new resource was not added")
	}
	if f.ix.Learn(widgets) {
		t.Error("Learn: the same resource added twice")
	}
	for _, name := range []string{"widgets.example.com", "widgets", "wg"} {
		got, ok := f.ix.Resource(name)
		if !ok || got.Kind != "Widget" || got.APIVersion != "example.com/v1" || !got.Namespaced || len(got.Columns) != 1 || got.Columns[0].Name != "Size" {
			t.Errorf("%s resolves to %+v (%v)", name, got, ok)
		}
		if res, err := f.ix.List(context.Background(), Query{Resource: name}); err != nil || len(res.Items) != 0 {
			t.Errorf("%s: list %v, %d items; want an empty answer", name, err, len(res.Items))
		}
	}
	// An informer's view wins: a learnt description of pods changes nothing.
	if f.ix.Learn(ResourceInfo{Name: "pods", Kind: "Gizmo", APIVersion: "v9"}) {
		t.Error("Learn replaced pods")
	}
	if got, _ := f.ix.Resource("pods"); got.Kind != "Pod" || got.APIVersion != "v1" {
		t.Errorf("pods after Learn: %+v", got)
	}
	if f.ix.Learn(ResourceInfo{Name: "gizmos"}) {
		t.Error("Learn took a resource without kind or apiVersion")
	}
}

// TestPagingWhileObjectsChange pages 2 at a time while objects are created and deleted
// between pages: what existed throughout comes exactly once.
func TestPagingWhileObjectsChange(t *testing.T) {
	f := newFixture(t, Options{})
	stable := map[string]bool{}
	for i := range 20 {
		cluster := []string{"a", "b", "c"}[i%3]
		name := fmt.Sprintf("p%02d", i)
		f.add(cluster, f.pod("ns", name, "n", "Running", nil))
		stable[cluster+"/ns/"+name] = true
	}
	seen := map[string]int{}
	q := Query{Resource: "pods", Limit: 2}
	for page := 0; ; page++ {
		res, err := f.ix.List(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names(res.Items) {
			seen[n]++
		}
		// Churn: a new object before and after the cursor, and a deletion of an unseen one.
		f.add("a", f.pod("ns", fmt.Sprintf("new-%02d", page), "n", "Running", nil))
		f.add("c", f.pod("aa", fmt.Sprintf("early-%02d", page), "n", "Running", nil))
		if page == 1 {
			f.ix.OnDelete(f.refFor("c"), f.pod("ns", "p17", "n", "Running", nil))
			delete(stable, "c/ns/p17")
		}
		if res.Continue == "" {
			break
		}
		q.Continue = res.Continue
	}
	for n := range stable {
		if seen[n] != 1 {
			t.Errorf("%s seen %d times, want once", n, seen[n])
		}
	}
	for n, k := range seen {
		if k > 1 {
			t.Errorf("%s seen %d times", n, k)
		}
	}
}

func TestContinueTokenErrors(t *testing.T) {
	f := seedFixture(t)
	res, err := f.ix.List(context.Background(), Query{Resource: "pods", Limit: 1})
	if err != nil || res.Continue == "" {
		t.Fatal(err)
	}
	tampered := []byte(res.Continue)
	tampered[3] ^= 1
	for name, tc := range map[string]struct {
		q    Query
		want error
	}{
		"forged":        {Query{Resource: "pods", Continue: string(tampered)}, ErrInvalidToken},
		"garbage":       {Query{Resource: "pods", Continue: "%%%"}, ErrInvalidToken},
		"another query": {Query{Resource: "pods", Namespace: "web", Continue: res.Continue}, ErrInvalidToken},
	} {
		if _, err := f.ix.List(context.Background(), tc.q); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	old := encodeContinue(continueToken{Query: (&Query{LabelSelector: labels.Everything(), FieldSelector: fields.Everything()}).hash("pods"), Cluster: "a", Key: "x", Issued: time.Now().Add(-time.Hour).Unix()})
	if _, err := f.ix.List(context.Background(), Query{Resource: "pods", Continue: old}); !errors.Is(err, ErrExpired) {
		t.Errorf("stale token: got %v, want ErrExpired", err)
	}
}

func TestCountGroupBy(t *testing.T) {
	f := seedFixture(t)
	res, err := f.ix.Count(context.Background(), Query{Resource: "pods"}, []string{"cluster", "namespace"})
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(res.Groups)
	want := "[{[a api] 1} {[a web] 2} {[b web] 1} {[c api] 1}]"
	if got != want || res.Total != 5 {
		t.Errorf("got %s total %d, want %s total 5", got, res.Total, want)
	}
	res, err = f.ix.Count(context.Background(), Query{Resource: "pods", FieldSelector: fields.OneTermEqualSelector("status.phase", "Running")}, []string{"label:app"})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(res.Groups); got != "[{[api] 2} {[web] 1}]" {
		t.Errorf("running pods by app: %s", got)
	}
	if _, err := f.ix.Count(context.Background(), Query{Resource: "pods"}, []string{"color"}); err == nil {
		t.Error("bad groupBy accepted")
	}
}

func TestStopDropsOnlyThatRunsObjects(t *testing.T) {
	f := seedFixture(t)
	old := f.refFor("a")
	// The cluster restarts: a new informer run re-adds a1 before the old run's stop lands.
	f.ref["a"] = podRef("a", 99)
	f.add("a", f.pod("api", "a1", "n1", "Running", nil))
	f.ix.OnStop(old)
	res, _ := f.ix.List(context.Background(), Query{Resource: "pods", Clusters: "a"})
	if got := fmt.Sprint(names(res.Items)); got != "[a/api/a1]" {
		t.Errorf("after the old run stopped: %s", got)
	}
	// Late events from the stopped run are ignored.
	f.ix.OnAdd(old, f.pod("web", "ghost", "n1", "Running", nil))
	if _, err := f.ix.Get("a", "pods", "web", "ghost"); !errors.Is(err, ErrNotFound) {
		t.Errorf("late event of a stopped informer was indexed: %v", err)
	}
}

func collect(t *testing.T, w watch.Interface, n int) []watch.Event {
	t.Helper()
	var out []watch.Event
	timeout := time.After(5 * time.Second)
	for len(out) < n {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch closed after %d events", len(out))
			}
			out = append(out, ev)
		case <-timeout:
			t.Fatalf("got %d events, want %d", len(out), n)
		}
	}
	return out
}

func describe(evs []watch.Event) []string {
	var out []string
	for _, ev := range evs {
		it := ev.Object.(*WatchItem)
		if ev.Type == watch.Bookmark {
			out = append(out, "BOOKMARK")
			continue
		}
		out = append(out, fmt.Sprintf("%s %s/%s", ev.Type, it.Cluster, it.Object.Name))
	}
	return out
}

func TestWatchSelectorTransitionsAndResume(t *testing.T) {
	f := seedFixture(t)
	q := Query{Resource: "pods", LabelSelector: mustLabels(t, "app=web")}
	w, err := f.ix.Watch(context.Background(), q, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	f.add("c", f.pod("web", "c2", "n", "Running", map[string]string{"app": "web"}))            // ADDED
	f.ix.OnUpdate(f.refFor("b"), nil, f.pod("web", "b1", "n", "Running", map[string]string{})) // leaves the selection: DELETED
	f.ix.OnUpdate(f.refFor("a"), nil, f.pod("api", "a1", "n", "Running", map[string]string{"app": "web"}))
	evs := collect(t, w, 4)
	if got := fmt.Sprint(describe(evs)); got != "[BOOKMARK ADDED c/c2 DELETED b/b1 ADDED a/a1]" {
		t.Errorf("events: %s", got)
	}
	cursor, err := ParseCursor(evs[1].Object.(*WatchItem).Cursor)
	if err != nil {
		t.Fatal(err)
	}
	w.Stop()

	// Resume from the cursor after the first event: the rest is replayed, then live ones.
	w2, err := f.ix.Watch(context.Background(), q, cursor)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Stop()
	f.add("b", f.pod("web", "b9", "n", "Running", map[string]string{"app": "web"}))
	// Each cluster's events keep their order; clusters are not ordered among themselves.
	resumed := describe(collect(t, w2, 4))
	sort.Strings(resumed[1:3])
	if got := fmt.Sprint(resumed); got != "[BOOKMARK ADDED a/a1 DELETED b/b1 ADDED b/b9]" {
		t.Errorf("resumed events: %s", got)
	}
}

func TestWatchExpiredCursorAndSlowWatcher(t *testing.T) {
	f := newFixture(t, Options{HistorySize: 4, WatchBuffer: 2})
	for i := range 10 {
		f.add("a", f.pod("ns", fmt.Sprint(i), "n", "Running", nil))
	}
	if _, err := f.ix.Watch(context.Background(), Query{Resource: "pods"}, Cursor{"a": 1}); !errors.Is(err, ErrExpired) {
		t.Errorf("cursor older than the history: %v", err)
	}
	w, err := f.ix.Watch(context.Background(), Query{Resource: "pods"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	// Nobody reads: ingest must not block, and the watcher is ended.
	for i := range 50 {
		f.add("a", f.pod("ns", fmt.Sprint("x", i), "n", "Running", nil))
	}
	var last watch.Event
	for ev := range w.ResultChan() {
		last = ev
	}
	if last.Type != watch.Error {
		t.Errorf("a watcher that fell behind should end with an ERROR event, got %v", last.Type)
	}
}

// TestCountFastPathsAgreeWithScans compares the index-backed counts with the same counts
// forced through a scan (a selector that matches everything).
func TestCountFastPathsAgreeWithScans(t *testing.T) {
	f := seedFixture(t)
	everything := mustLabels(t, "nosuchlabel!=x")
	for _, groupBy := range [][]string{{"cluster", "namespace"}, {"label:app"}, {"cluster", "label:tier"}, {"namespace"}} {
		fast, err := f.ix.Count(context.Background(), Query{Resource: "pods"}, groupBy)
		if err != nil {
			t.Fatal(err)
		}
		slow, err := f.ix.Count(context.Background(), Query{Resource: "pods", LabelSelector: everything}, groupBy)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(fast.Groups) != fmt.Sprint(slow.Groups) || fast.Total != slow.Total {
			t.Errorf("%v: fast %v (%d), scan %v (%d)", groupBy, fast.Groups, fast.Total, slow.Groups, slow.Total)
		}
	}
}

type onlyCluster string

func (c onlyCluster) SeesCluster(n string) bool       { return n == string(c) }
func (onlyCluster) SeesNamespace(string, string) bool { return true }

func TestScopeLimitsListCountAndWatch(t *testing.T) {
	f := seedFixture(t)
	q := Query{Resource: "pods", Scope: onlyCluster("b")}
	res, _ := f.ix.List(context.Background(), q)
	if got := fmt.Sprint(names(res.Items)); got != "[b/web/b1]" {
		t.Errorf("list: %s", got)
	}
	if _, err := f.ix.List(context.Background(), Query{Resource: "pods", Scope: onlyCluster("b"), Clusters: "a"}); !errors.Is(err, ErrUnknownCluster) {
		t.Errorf("a cluster outside the scope by name: %v", err)
	}
	c, _ := f.ix.Count(context.Background(), q, []string{"cluster"})
	if c.Total != 1 {
		t.Errorf("count: %d", c.Total)
	}
	w, err := f.ix.Watch(context.Background(), q, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	f.add("a", f.pod("web", "a9", "n", "Running", nil))
	f.add("b", f.pod("web", "b9", "n", "Running", nil))
	if got := fmt.Sprint(describe(collect(t, w, 2))); got != "[BOOKMARK ADDED b/b9]" {
		t.Errorf("watch: %s", got)
	}
}

// A removed cluster's objects stay reachable only through its history's DELETED events,
// for RemovedRetention; then the shard goes, the objects are freed, and a cursor from
// before is 410 for that cluster, while a new run of the cluster continues after it.
func TestStoppedClusterIsFreedAfterRetention(t *testing.T) {
	f := newFixture(t, Options{RemovedRetention: 50 * time.Millisecond})
	obj := f.pod("web", "a1", "n1", "Running", nil)
	f.add("a", obj)
	f.add("b", f.pod("web", "b1", "n1", "Running", nil))
	before, err := f.ix.Cursor(Query{Resource: "pods"})
	if err != nil {
		t.Fatal(err)
	}
	freed := weak.Make(obj)
	obj = nil
	f.ix.OnStop(f.refFor("a"))

	// Within the retention a watch resumes through the stop and sees the DELETED event.
	w, err := f.ix.Watch(context.Background(), Query{Resource: "pods"}, before)
	if err != nil {
		t.Fatalf("resume right after the stop: %v", err)
	}
	evs := collect(t, w, 2)
	w.Stop()
	if it, ok := evs[1].Object.(*WatchItem); evs[1].Type != watch.Deleted || !ok || it.Cluster != "a" || it.Object.Name != "a1" {
		t.Fatalf("events after the stop: %+v", evs)
	}
	evs = nil

	deadline := time.Now().Add(10 * time.Second)
	for freed.Value() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the stopped cluster's object is still reachable after its retention")
		}
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := f.ix.Watch(context.Background(), Query{Resource: "pods"}, before); !errors.Is(err, ErrExpired) {
		t.Errorf("resume from before the drop: %v, want ErrExpired", err)
	}
	if w, err := f.ix.Watch(context.Background(), Query{Resource: "pods", Clusters: "b"}, before); err != nil {
		t.Errorf("resume of another cluster: %v", err)
	} else {
		w.Stop()
	}
	// The cluster comes back: its positions go on after the dropped shard's, so the new
	// run's cursors resume.
	f.ref["a"] = podRef("a", 42)
	f.add("a", f.pod("web", "a2", "n1", "Running", nil))
	now, err := f.ix.Cursor(Query{Resource: "pods", Clusters: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if now["a"] <= before["a"] {
		t.Errorf("new run's position %d is not after the dropped shard's %d", now["a"], before["a"])
	}
	if w, err := f.ix.Watch(context.Background(), Query{Resource: "pods", Clusters: "a"}, now); err != nil {
		t.Errorf("resume within the new run: %v", err)
	} else {
		w.Stop()
	}
}
