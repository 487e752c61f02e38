package clusters

import (
	"testing"
	"time"
)

func TestOffsetEstimatorConvergesBelowDateResolution(t *testing.T) {
	const trueOffset = 1234 * time.Millisecond
	base := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	var e offsetEstimator
	for i := range 10 {
		// Probes at different sub-second phases, 5 ms round trip.
		sent := base.Add(time.Duration(i)*10*time.Second + time.Duration(i*97)*time.Millisecond)
		received := sent.Add(5 * time.Millisecond)
		serverNow := sent.Add(2500 * time.Microsecond).Add(trueOffset)
		e.add(serverNow.Truncate(time.Second), sent, received)
	}
	if err := e.estimate() - trueOffset; err > 60*time.Millisecond || err < -60*time.Millisecond {
		t.Errorf("estimate %s, true offset %s", e.estimate(), trueOffset)
	}
}

func TestCountersResolveFreshnessProbes(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	c := newCounters(now)
	c.advance(100, now)
	c.probed(90, now) // the cache is already past it: fresh
	c.probed(120, now)
	c.probed(150, now.Add(time.Second))
	c.advance(130, now.Add(2*time.Second)) // reaches the first probe after 2s
	s := c.snapshot()
	if s.Freshness.Count != 2 || s.Freshness.Sum != 2 {
		t.Errorf("freshness: %d observations summing to %v, want 2 summing to 2s", s.Freshness.Count, s.Freshness.Sum)
	}
	if s.ResourceVersionLag != 20 {
		t.Errorf("resourceVersion lag %d, want 150-130", s.ResourceVersionLag)
	}
}
