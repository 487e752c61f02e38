package aggregator

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/cores"
	"github.com/fleetcache/fleetcache/internal/fixtures"
)

// gate is a Scope that a scan asks about every object it visits: it counts them, and
// stops the scan at the at-th object until release is closed.
type gate struct {
	at      int64
	calls   atomic.Int64
	reached chan struct{}
	release chan struct{}
	once    sync.Once
}

func newGate(at int64) *gate {
	return &gate{at: at, reached: make(chan struct{}), release: make(chan struct{})}
}

func (g *gate) SeesCluster(string) bool { return true }
func (g *gate) SeesNamespace(string, string) bool {
	if g.calls.Add(1) == g.at {
		g.once.Do(func() { close(g.reached) })
		<-g.release
	}
	return true
}

// within fails the test when done does not happen while the scan is stopped: a liveness
// check (with the old locking it never happens until the scan ends), not a measurement.
func within(t *testing.T, what string, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s waited for the scan", what)
	}
}

func seedPods(f *fixture, cluster string, n int) {
	for i := range n {
		f.add(cluster, f.pod("ns", fmt.Sprintf("pod-%04d", i), "n1", "Running", map[string]string{"app": "x"}))
	}
}

// A scan never holds the shard's lock while it evaluates objects: with a count stopped
// half-way through a shard (its field selector read from every object), the cluster's
// informer stores an update, two additions and a deletion in that shard (each after or
// before the count's position) and a get reads the update. The count still answers for
// the moment it started.
func TestIngestDoesNotWaitForAScan(t *testing.T) {
	f := newFixture(t, Options{})
	seedPods(f, "a", 1200)
	g := newGate(600)
	q := Query{Resource: "pods", Scope: g, FieldSelector: mustFields(t, "spec.schedulerName!=x")}
	type answer struct {
		res *CountResult
		err error
	}
	counted := make(chan answer, 1)
	go func() {
		res, err := f.ix.Count(context.Background(), q, []string{"field:status.phase"})
		counted <- answer{res, err}
	}()
	<-g.reached

	ingested := make(chan struct{})
	go func() {
		defer close(ingested)
		f.ix.OnUpdate(f.refFor("a"), nil, f.pod("ns", "pod-0001", "n1", "Failed", map[string]string{"app": "x"}))
		f.add("a", f.pod("ns", "pod-9998", "n1", "Running", map[string]string{"app": "x"}))
		f.add("a", f.pod("ns", "pod-9999", "n1", "Running", map[string]string{"app": "x"}))
		f.ix.OnDelete(f.refFor("a"), f.pod("ns", "pod-1199", "n1", "Running", nil))
	}()
	within(t, "ingest", ingested)
	got := make(chan struct{})
	var it Item
	var err error
	go func() {
		defer close(got)
		it, err = f.ix.Get("a", "pods", "ns", "pod-0001")
	}()
	within(t, "a get", got)
	if err != nil || it.Object.Fields[1].Value != "Failed" {
		t.Fatalf("get while the scan is stopped: %v %+v", err, it.Object)
	}
	close(g.release)

	a := <-counted
	if a.err != nil {
		t.Fatal(a.err)
	}
	// The state when the count started: 1,200 pods, all Running.
	if want := []Group{{Values: []string{"Running"}, Count: 1200}}; !reflect.DeepEqual(a.res.Groups, want) {
		t.Errorf("count across the changes: %+v, want %+v", a.res.Groups, want)
	}
	res, err := f.ix.Count(context.Background(), Query{Resource: "pods", FieldSelector: q.FieldSelector}, []string{"field:status.phase"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []Group{{Values: []string{"Failed"}, Count: 1}, {Values: []string{"Running"}, Count: 1200}}; !reflect.DeepEqual(res.Groups, want) {
		t.Errorf("count after the changes: %+v, want %+v", res.Groups, want)
	}
}

// A watch's initial events are read from a snapshot taken with its position, outside the
// shard's lock: a change stored while they are read is not among them, and comes after
// the bookmark that ends them.
func TestInitialEventsAreTheStateAtTheirPosition(t *testing.T) {
	f := newFixture(t, Options{})
	seedPods(f, "a", 600)
	g := newGate(300)
	type opened struct {
		w   watch.Interface
		err error
	}
	started := make(chan opened, 1)
	go func() {
		w, err := f.ix.WatchWith(context.Background(), Query{Resource: "pods", Scope: g}, WatchOptions{InitialEvents: true})
		started <- opened{w, err}
	}()
	<-g.reached
	ingested := make(chan struct{})
	go func() {
		defer close(ingested)
		f.ix.OnUpdate(f.refFor("a"), nil, f.pod("ns", "pod-0500", "n2", "Running", map[string]string{"app": "x"}))
	}()
	within(t, "ingest", ingested)
	close(g.release)
	o := <-started
	if o.err != nil {
		t.Fatal(o.err)
	}
	defer o.w.Stop()
	evs := collect(t, o.w, 602)
	for _, ev := range evs[:600] {
		it := ev.Object.(*WatchItem)
		if ev.Type != watch.Added || it.Object.Name == "pod-0500" && it.Object.Fields[0].Value != "n1" {
			t.Fatalf("initial event %s %s on %s", ev.Type, it.Object.Name, it.Object.Fields[0].Value)
		}
	}
	if it := evs[600].Object.(*WatchItem); evs[600].Type != watch.Bookmark || !it.InitialEventsEnd {
		t.Fatalf("event 600: %s, want the bookmark that ends the initial events", evs[600].Type)
	}
	if it := evs[601].Object.(*WatchItem); evs[601].Type != watch.Modified || it.Object.Name != "pod-0500" || it.Object.Fields[0].Value != "n2" {
		t.Fatalf("event 601: %s %s, want the update", evs[601].Type, it.Object.Name)
	}
}

// A count or a list whose context ends stops within a chunk of objects and says why.
func TestCancelledScanStops(t *testing.T) {
	f := newFixture(t, Options{})
	for _, c := range []string{"a", "b"} {
		seedPods(f, c, 4000)
	}
	const cancelAt = 500
	for _, tc := range []struct {
		name string
		run  func(ctx context.Context, q Query) error
	}{
		{"count", func(ctx context.Context, q Query) error {
			_, err := f.ix.Count(ctx, q, []string{"field:spec.schedulerName"})
			return err
		}},
		{"list", func(ctx context.Context, q Query) error {
			_, err := f.ix.List(ctx, q)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sc := &cancelling{at: cancelAt, cancel: cancel}
			err := tc.run(ctx, Query{Resource: "pods", Scope: sc, FieldSelector: mustFields(t, "spec.schedulerName=nobody")})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err %v, want context.Canceled", err)
			}
			// Each of the count's goroutines (one per core) finishes the chunk it is in.
			if n := sc.calls.Load(); n > cancelAt+2*scanChunk {
				t.Errorf("%d objects evaluated, %d after the client went; want at most %d", n, n-cancelAt, 2*scanChunk)
			}
		})
	}
}

// cancelling is a Scope that counts the objects a scan evaluates and cancels the scan's
// context at the at-th.
type cancelling struct {
	at     int64
	calls  atomic.Int64
	cancel context.CancelFunc
}

func (c *cancelling) SeesCluster(string) bool { return true }
func (c *cancelling) SeesNamespace(string, string) bool {
	if c.calls.Add(1) == c.at {
		c.cancel()
	}
	return true
}

// Field selectors and group-bys that no index answers read from the stored bytes what
// decoding each object read: the same lists and the same counts, on realistic pods
// (compressed once the resource's dictionary is trained) and on custom resources.
func TestFieldQueriesAnswerAsDecoding(t *testing.T) {
	c, err := clusters.NewCompactor(corev1.SchemeGroupVersion.WithKind("Pod"), "pods")
	if err != nil {
		t.Fatal(err)
	}
	ix := New(nil, Options{})
	for i := range 300 {
		p := fixtures.FleetPod(i%3, i)
		p.Spec.SchedulerName = []string{"default-scheduler", "batch", ""}[i%3]
		p.Spec.Priority = []*int32{nil, ptr.To(int32(0)), ptr.To(int32(i % 7))}[i%3]
		p.Spec.HostNetwork = i%5 == 0
		o, err := c.Compact(p)
		if err != nil {
			t.Fatal(err)
		}
		ix.OnAdd(podRef(fmt.Sprintf("c%d", i%3), uint64(i%3+1)), o)
	}
	wc, err := clusters.NewCompactor(fixtures.RealisticWidget(0).GroupVersionKind(), "widgets.example.com")
	if err != nil {
		t.Fatal(err)
	}
	widgets := &clusters.InformerRef{Cluster: "c0", Resource: "widgets.example.com", Kind: "Widget", APIVersion: "example.com/v1", Namespaced: true, ID: 9}
	for i := range 100 {
		w := fixtures.RealisticWidget(i)
		w.Object["spec"].(map[string]any)["size"] = int64(i % 4)
		w.Object["spec"].(map[string]any)["ratio"] = float64(i%3) / 2
		o, err := wc.Compact(w)
		if err != nil {
			t.Fatal(err)
		}
		ix.OnAdd(widgets, o)
	}
	type result struct {
		Lists  [][]string
		Counts []*CountResult
	}
	queries := []struct {
		resource, fields string
		groupBy          []string
	}{
		{"pods", "spec.schedulerName=batch", []string{"cluster", "field:spec.priority"}},
		{"pods", "spec.priority!=0,spec.hostNetwork=true", []string{"field:spec.schedulerName", "field:status.podIP"}},
		{"pods", "status.podIP!=10.100.0.7", []string{"field:spec.priority", "field:spec.hostNetwork", "field:status.startTime"}},
		{"pods", "metadata.labels.app=svc-007", []string{"field:metadata.labels.app"}},
		{"widgets.example.com", "spec.size=2", []string{"field:spec.ratio", "field:spec.color"}},
		{"widgets.example.com", "spec.ratio!=0.5", []string{"field:spec.size", "field:kind"}},
	}
	run := func() result {
		var r result
		for _, qc := range queries {
			q := Query{Resource: qc.resource, FieldSelector: mustFields(t, qc.fields)}
			l, err := ix.List(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			r.Lists = append(r.Lists, names(l.Items))
			q.FieldSelector = nil
			cnt, err := ix.Count(context.Background(), q, qc.groupBy)
			if err != nil {
				t.Fatal(err)
			}
			r.Counts = append(r.Counts, cnt)
		}
		return r
	}
	fast := run()
	decodeFields = true
	slow := run()
	decodeFields = false
	if !reflect.DeepEqual(fast, slow) {
		for i := range queries {
			if !reflect.DeepEqual(fast.Lists[i], slow.Lists[i]) {
				t.Errorf("%+v: list %v, decoding %v", queries[i], fast.Lists[i], slow.Lists[i])
			}
			if !reflect.DeepEqual(fast.Counts[i].Groups, slow.Counts[i].Groups) {
				t.Errorf("%+v: count %+v, decoding %+v", queries[i], fast.Counts[i].Groups, slow.Counts[i].Groups)
			}
		}
	}
	for i, l := range fast.Lists {
		if len(l) == 0 || len(fast.Counts[i].Groups) < 2 {
			t.Errorf("%+v: %d items, %d groups: the query tells nothing apart", queries[i], len(l), len(fast.Counts[i].Groups))
		}
	}
}

// Only fields no index holds make a query read objects.
func TestReadsObjects(t *testing.T) {
	f := seedFixture(t)
	for _, tc := range []struct {
		fields  string
		groupBy []string
		want    bool
	}{
		{"", []string{"cluster", "namespace", "label:app"}, false},
		{"metadata.name=a1,metadata.namespace!=web", nil, false},
		{"spec.nodeName=n1,status.phase!=Running", []string{"field:status.phase"}, false},
		{"spec.schedulerName=x", nil, true},
		{"", []string{"cluster", "field:spec.restartPolicy"}, true},
		{"spec.nodeName=n1,spec.hostNetwork=true", nil, true},
	} {
		q := Query{Resource: "pods", FieldSelector: mustFields(t, tc.fields)}
		if got := f.ix.ReadsObjects(q, tc.groupBy); got != tc.want {
			t.Errorf("%q %v: %v, want %v", tc.fields, tc.groupBy, got, tc.want)
		}
	}
}

// A count narrowed to one core (cores.Limit: the server does so while cheaper requests
// run) still finishes, on one goroutine: a second one never holds a shard it may not scan.
func TestCountNarrowedToOneCoreFinishes(t *testing.T) {
	f := newFixture(t, Options{})
	for _, c := range []string{"a", "b", "c", "d"} {
		seedPods(f, c, 300)
	}
	ctx := cores.Limit(context.Background(), func() int { return 1 })
	counted := make(chan struct{})
	var res *CountResult
	var err error
	go func() {
		defer close(counted)
		res, err = f.ix.Count(ctx, Query{Resource: "pods", FieldSelector: mustFields(t, "spec.schedulerName!=x")}, []string{"cluster"})
	}()
	select {
	case <-counted:
	case <-time.After(20 * time.Second):
		t.Fatal("a count narrowed to one core never finished")
	}
	if err != nil || res.Total != 1200 || len(res.Groups) != 4 {
		t.Fatalf("%v %+v", err, res)
	}
}
