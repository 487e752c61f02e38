package clusters

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
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
	// Nothing ends soon: in turn, every resource.
	for _, rc := range c.resources {
		rc.stream = nil
	}
	seen := map[string]bool{}
	for range len(c.resources) {
		seen[c.nextProbeTarget().display] = true
	}
	if len(seen) != len(c.resources) {
		t.Errorf("rotation probed %v, want all %d resources", seen, len(c.resources))
	}
}
