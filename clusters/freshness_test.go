package clusters

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func TestProofBoundsStalenessFromTheProbeSendTime(t *testing.T) {
	p := newProof()
	p.advance(100, t0)
	if _, ok := p.staleness(t0); ok {
		t.Fatal("a bound before any probe was reached")
	}
	// A probe sent at t0 returns 120; its answer takes 2s to arrive (a slow return path).
	p.probed(t0, 120, t0.Add(2*time.Second))
	if _, ok := p.staleness(t0.Add(2 * time.Second)); ok {
		t.Fatal("proven before the cache reached the probe's revision")
	}
	// The watch delivers 130 at t0+2.1s: the cache held everything the apiserver had at t0.
	p.advance(130, t0.Add(2100*time.Millisecond))
	if got, _ := p.staleness(t0.Add(3 * time.Second)); got != 3*time.Second {
		t.Errorf("staleness at t0+3s: %s, want 3s (measured from the probe's send time)", got)
	}
	if h := p.syncLag.snapshot(); h.Count != 1 || h.Sum != 2.1 {
		t.Errorf("sync lag: %d observations summing to %v, want one of 2.1s", h.Count, h.Sum)
	}
	// A probe the cache is already past is reached when its answer arrives.
	p.probed(t0.Add(5*time.Second), 125, t0.Add(5500*time.Millisecond))
	if got, _ := p.staleness(t0.Add(6 * time.Second)); got != time.Second {
		t.Errorf("staleness after a reached probe: %s, want 1s", got)
	}
	if p.revisionLag() != 0 {
		t.Errorf("revision lag %d, want 0", p.revisionLag())
	}
	p.probed(t0.Add(7*time.Second), 150, t0.Add(7*time.Second))
	if p.revisionLag() != 20 {
		t.Errorf("revision lag %d, want 150-130", p.revisionLag())
	}
}

func TestProofIsVoidAfterADisruptionUntilANewProbeIsReached(t *testing.T) {
	const staleAfter = 10 * time.Second
	p := newProof()
	p.probed(t0, 10, t0)
	p.advance(10, t0)
	if !p.current(t0.Add(time.Second), staleAfter) {
		t.Fatal("not current right after a reached probe")
	}
	p.disrupted(t0.Add(2 * time.Second))
	if p.current(t0.Add(3*time.Second), staleAfter) {
		t.Error("current after a disruption, with only an older proof")
	}
	// A probe sent after the disruption, reached: current again.
	p.probed(t0.Add(4*time.Second), 11, t0.Add(4*time.Second))
	p.advance(11, t0.Add(4*time.Second))
	if !p.current(t0.Add(5*time.Second), staleAfter) {
		t.Error("not current after a new probe was reached")
	}
	if p.current(t0.Add(4*time.Second+staleAfter+time.Millisecond), staleAfter) {
		t.Error("current although the last proof is older than staleAfter")
	}
}

func TestProofKeepsTheNewestPendingProbes(t *testing.T) {
	p := newProof()
	for i := range 100 {
		p.probed(t0.Add(time.Duration(i)*time.Second), uint64(1000+i), t0.Add(time.Duration(i)*time.Second))
	}
	if len(p.pending) != maxPendingProbes || p.pending[0].rv != 1000+100-maxPendingProbes {
		t.Fatalf("%d pending, oldest %d", len(p.pending), p.pending[0].rv)
	}
	p.advance(1099, t0.Add(100*time.Second))
	if got, _ := p.staleness(t0.Add(100 * time.Second)); got != time.Second {
		t.Errorf("staleness %s, want 1s (the newest probe, sent at t0+99s)", got)
	}
	// A list that goes back in time (etcd restored from a backup) is followed.
	p.relisted(50, t0.Add(101*time.Second))
	if p.cacheRV != 50 {
		t.Errorf("cache revision %d after a relist at 50", p.cacheRV)
	}
}

// TestResourcePhaseFollowsItsProof derives a resource's phase with a fake clock: Synced
// while proven, Stale (Degraded) once the proof is older than StaleAfter or void after a
// disruption, Synced again when a new probe is reached.
func TestResourcePhaseFollowsItsProof(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	c := New(Target{Name: "fake", Config: &rest.Config{}}, Options{Clock: clk, ProbeInterval: time.Second, IdleProofInterval: 5 * time.Second})
	if c.opts.StaleAfter != 12*time.Second {
		t.Fatalf("default staleAfter %s, want idle proof 5s + 2 probe intervals + 5s", c.opts.StaleAfter)
	}
	rc := &resourceCache{cluster: c, display: "configmaps", log: c.log, cnt: newCounters(t0), proof: newProof(),
		codec: &codec{gvk: corev1.SchemeGroupVersion.WithKind("ConfigMap")}}
	phase := func() (Phase, string) {
		rc.update(func(*resourceFacts) {})
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return rc.cond.Phase, rc.cond.Reason
	}
	if p, _ := phase(); p != PhaseSyncing {
		t.Fatalf("before the first list: %s", p)
	}
	rc.listDone(t0, t0.Add(100*time.Millisecond), 100)
	rc.update(func(f *resourceFacts) { f.synced = true })
	if p, _ := phase(); p != PhaseSynced {
		t.Fatalf("after a consistent list: %s", p)
	}
	clk.Step(12*time.Second + time.Millisecond)
	if p, r := phase(); p != PhaseDegraded || r != ReasonStale {
		t.Fatalf("12s after the last proof: %s/%s, want Degraded/Stale", p, r)
	}
	rc.mu.Lock()
	rc.proof.probed(clk.Now(), 101, clk.Now())
	rc.proof.advance(101, clk.Now())
	rc.mu.Unlock()
	if p, _ := phase(); p != PhaseSynced {
		t.Fatalf("after a reached probe: %s", p)
	}
	rc.mu.Lock()
	rc.proof.disrupted(clk.Now().Add(time.Millisecond))
	rc.mu.Unlock()
	clk.Step(time.Second)
	if p, r := phase(); p != PhaseDegraded || r != ReasonStale {
		t.Fatalf("after a disruption: %s/%s, want Degraded/Stale", p, r)
	}
}
