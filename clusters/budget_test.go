package clusters

import (
	"testing"
	"time"
)

// TestRequestBudgetStretchesIntervals: within the budget the configured intervals apply;
// past it every cluster's intervals grow by total cost / budget; removing clusters
// brings them back.
func TestRequestBudgetStretchesIntervals(t *testing.T) {
	b := NewRequestBudget(50)
	opts := Options{Budget: b, ProbeInterval: 2 * time.Second, IdleProofInterval: 15 * time.Second, RediscoveryInterval: 30 * time.Second}
	var cs []*Cluster
	for range 30 {
		cs = append(cs, New(Target{Name: "c"}, opts))
	}
	// Each cluster with 13 informers costs 1/2 + 2*13/15 + 2/30 = 2.3 requests/s.
	perCluster := 0.5 + 26.0/15 + 2.0/30
	for _, c := range cs[:20] {
		b.set(c, c.opts.freshnessCost(13))
	}
	if s := b.Scale(); s != 1 {
		t.Fatalf("20 clusters (%.1f requests/s): scale %v, want 1", 20*perCluster, s)
	}
	if got := cs[0].probeInterval(); got != 2*time.Second {
		t.Errorf("probe interval within budget %v, want 2s", got)
	}
	for _, c := range cs[20:] {
		b.set(c, c.opts.freshnessCost(13))
	}
	want := 30 * perCluster / 50
	if s := b.Scale(); s < want-1e-9 || s > want+1e-9 {
		t.Fatalf("30 clusters: scale %v, want %v", s, want)
	}
	c := cs[0]
	near := func(a, b time.Duration) bool { return (a - b).Abs() < time.Millisecond }
	if got, wantD := c.probeInterval(), scaled(2*time.Second, want); !near(got, wantD) {
		t.Errorf("probe interval %v, want %v", got, wantD)
	}
	if got, wantD := c.idleProofInterval(), scaled(15*time.Second, want); !near(got, wantD) {
		t.Errorf("idle proof interval %v, want %v", got, wantD)
	}
	if got, wantD := c.rediscoveryInterval(), scaled(30*time.Second, want); !near(got, wantD) {
		t.Errorf("rediscovery interval %v, want %v", got, wantD)
	}
	if got, wantD := c.staleAfter(), scaled(c.opts.StaleAfter, want); !near(got, wantD) || got <= c.idleProofInterval() {
		t.Errorf("stale after %v, want %v (above the idle proof interval)", got, wantD)
	}
	for _, c := range cs[10:] {
		b.set(c, 0)
	}
	if s := b.Scale(); s != 1 {
		t.Errorf("after removing 20 clusters: scale %v, want 1", s)
	}
	var none *RequestBudget
	if none.Scale() != 1 {
		t.Error("a nil budget stretches")
	}
}
