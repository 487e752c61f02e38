package clusters

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"
)

// TestProbeLoopProbesTheWatchEndingNext: the probe loop lists the resource whose watch
// ends soonest within a probe interval (its closing bookmark then proves it), not one it
// probed in the last interval; that resource's own pre-bookmark probe is then skipped,
// unless a disruption came after the loop's probe. With no watch ending soon, it takes
// the resources in turn.
func TestProbeLoopProbesTheWatchEndingNext(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	c := New(Target{Name: "fake", Config: &rest.Config{}}, Options{Clock: clk, ProbeInterval: 10 * time.Second})
	add := func(name string, watchEndsIn time.Duration) *resourceCache {
		rc := &resourceCache{cluster: c, display: name, log: c.log, cnt: newCounters(t0), proof: newProof(),
			codec: &codec{gvk: corev1.SchemeGroupVersion.WithKind("ConfigMap")}, lister: &cache.ListWatch{}}
		rc.facts.synced = true
		if watchEndsIn > 0 {
			rc.stream = &stream{rc: rc, deadline: t0.Add(watchEndsIn)}
		}
		c.resources[name+"/"] = rc
		return rc
	}
	add("a", time.Minute)          // ends after the next interval
	b := add("b", 8*time.Second)   // ends within it
	cm := add("c", 12*time.Second) // ends within it, later than b
	add("d", 2*time.Second)        // too late for a probe before its bookmark
	add("e", 0)                    // no watch
	if got := c.nextProbeTarget(); got != b {
		t.Fatalf("probed %s, want b (its watch ends first within the interval)", got.display)
	}
	b.lastProbe = clk.Now()
	if got := c.nextProbeTarget(); got != cm {
		t.Fatalf("probed %s, want c (b was probed in this interval)", got.display)
	}
	clk.Step(5 * time.Second) // b's pre-bookmark timer fires 3s before its end
	if !b.probedRecently(clk.Now()) {
		t.Error("b's own probe not skipped although the loop probed it 5s ago")
	}
	b.proof.disrupted(clk.Now())
	if b.probedRecently(clk.Now()) {
		t.Error("b's own probe skipped although its watch broke after the loop's probe")
	}
	// Nothing ends soon: every resource in turn, the one probed longest ago first.
	for _, rc := range c.resources {
		rc.stream = nil
	}
	seen := map[string]bool{}
	for range len(c.resources) {
		rc := c.nextProbeTarget()
		seen[rc.display] = true
		clk.Step(time.Second)
		rc.lastProbe = clk.Now()
	}
	if len(seen) != len(c.resources) {
		t.Errorf("rotation probed %v, want all %d resources", seen, len(c.resources))
	}
	// A resource that changed since its last probe goes first, even if probed recently.
	cm.changes++
	if got := c.nextProbeTarget(); got != cm {
		t.Errorf("probed %s, want c (it changed since its last probe)", got.display)
	}
}

// TestProbeProvesOnlyTheResourceItListed: resources of one cluster may count revisions
// of their own (another etcd, an aggregated apiserver). A probe of ConfigMaps that returns
// revision 50 proves ConfigMaps, whose cache is at 50, and not Secrets, whose cache is at
// 900 in another sequence: before, that probe "proved" Secrets current as of its send time.
func TestProbeProvesOnlyTheResourceItListed(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	c := New(Target{Name: "fake", Config: &rest.Config{}}, Options{Clock: clk})
	lister := func(rv string) *cache.ListWatch {
		return &cache.ListWatch{ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
			return &corev1.ConfigMapList{ListMeta: metav1.ListMeta{ResourceVersion: rv}}, nil
		}}
	}
	add := func(name string, cacheRV uint64, l *cache.ListWatch) *resourceCache {
		rc := &resourceCache{cluster: c, display: name, log: c.log, cnt: newCounters(t0), proof: newProof(),
			codec: &codec{gvk: corev1.SchemeGroupVersion.WithKind("ConfigMap")}, lister: l, informer: &reflectorInformer{}}
		rc.facts.synced = true
		rc.proof.advance(cacheRV, t0)
		c.resources[name+"/"] = rc
		return rc
	}
	cms := add("configmaps", 50, lister("50"))
	secrets := add("secrets", 900, lister("900"))
	if err := c.probeResource(context.Background(), cms); err != nil {
		t.Fatal(err)
	}
	if _, ok := cms.proof.staleness(clk.Now()); !ok {
		t.Error("ConfigMaps not proven by their own probe")
	}
	if st, ok := secrets.proof.staleness(clk.Now()); ok {
		t.Errorf("Secrets proven (staleness %s) by a probe of ConfigMaps", st)
	}
}

// TestChangesCountOnlyWatchedChanges: a watch-list's initial events are its list, not
// changes; counted, every resource looked changed after a start and the busy ones waited
// behind them for their probes (a 2s one-way delay: bound up to 14s for ~30s).
func TestChangesCountOnlyWatchedChanges(t *testing.T) {
	c := New(Target{Name: "fake", Config: &rest.Config{}}, Options{Clock: clocktesting.NewFakeClock(t0)})
	rc := &resourceCache{cluster: c, display: "configmaps", log: c.log, cnt: newCounters(t0), proof: newProof()}
	rc.stream = &stream{rc: rc, initial: true}
	rc.observeEvent(&metav1.WatchEvent{Type: string(watch.Added)})
	if rc.changes != 0 {
		t.Fatalf("an initial event counted as a change: %d", rc.changes)
	}
	rc.stream.initial = false
	for _, ty := range []watch.EventType{watch.Added, watch.Modified, watch.Deleted, watch.Bookmark} {
		rc.observeEvent(&metav1.WatchEvent{Type: string(ty)})
	}
	if rc.changes != 3 {
		t.Fatalf("changes %d after ADDED, MODIFIED, DELETED and a BOOKMARK, want 3", rc.changes)
	}
}

// TestAProbeWaitingForTheCacheGetsAShortWatch: when a watch's closing bookmark came before
// its pre-bookmark probe was answered (a loaded apiserver), the probe waits for the cache;
// the next watch is a short one, whose bookmark (taken after that answer) proves it within
// seconds, instead of a full idle proof interval later, past staleAfter.
func TestAProbeWaitingForTheCacheGetsAShortWatch(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	c := New(Target{Name: "fake", Config: &rest.Config{}}, Options{Clock: clk})
	rc := &resourceCache{cluster: c, display: "configmaps", log: c.log, cnt: newCounters(t0), proof: newProof()}
	rc.proof.advance(100, t0)
	rc.proof.probed(t0, 100, t0) // proven at t0
	if got := rc.watchTimeout(); time.Duration(got)*time.Second <= shortWatch {
		t.Fatalf("a proven resource got a %ds watch", got)
	}
	clk.Step(10 * time.Second)
	rc.proof.probed(clk.Now(), 120, clk.Now()) // the cache is at 100: waiting
	if got := rc.watchTimeout(); time.Duration(got)*time.Second != shortWatch {
		t.Errorf("a resource whose probe waits for the cache got a %ds watch, want %s", got, shortWatch)
	}
	rc.proof.advance(120, clk.Now())
	if got := rc.watchTimeout(); time.Duration(got)*time.Second <= shortWatch {
		t.Errorf("a resource proven again got a %ds watch", got)
	}
}
