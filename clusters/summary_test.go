package clusters

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
)

// TestSummaryAgreesWithStatus: a cluster's summary (what the cluster-level metrics read)
// says what its full status says, with resources proven, unproven, not served and
// stopped; and the staleness bound is absent while one served resource has none.
func TestSummaryAgreesWithStatus(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	c := New(Target{Name: "fake", Config: &rest.Config{Host: "https://fake.example:6443"}}, Options{Clock: clk})
	c.version, c.lastProbe, c.initialSync = "v1.37.2", t0.Add(-time.Second), t0.Add(-time.Minute)
	c.cond = Condition{Phase: PhaseSynced}
	c.probes.Store(7)
	c.connResets.Store(1)
	c.discoveryRequests.Store(4)
	add := func(name string, objects int64, provenAgo time.Duration, fn func(rc *resourceCache)) *resourceCache {
		rc := &resourceCache{cluster: c, display: name, log: c.log, cnt: newCounters(t0), proof: newProof(),
			codec: &codec{gvk: corev1.SchemeGroupVersion.WithKind("ConfigMap")}, informer: &reflectorInformer{}}
		rc.objects.Store(objects)
		rc.cond = Condition{Phase: PhaseSynced}
		if provenAgo > 0 {
			rc.proof.listed(t0.Add(-provenAgo), 10, t0)
		}
		if fn != nil {
			fn(rc)
		}
		c.resources[name+"/"] = rc
		return rc
	}
	add("configmaps", 5, 3*time.Second, nil)
	add("secrets", 2, 9*time.Second, nil)
	add("widgets.example.com", 0, 0, func(rc *resourceCache) {
		rc.cond, rc.facts.notServed, rc.informer = Condition{Phase: PhaseNotServed}, true, nil
	})
	add("nodes", 4, time.Second, func(rc *resourceCache) { rc.facts.stopped = true })

	check := func(when string) ClusterSummary {
		t.Helper()
		got, want := c.Summary(), c.Status().Summary()
		if got != want {
			t.Errorf("%s: summary\n%+v\nstatus says\n%+v", when, got, want)
		}
		return got
	}
	// A stopped resource has no bound: the cluster has none either.
	if s := check("with a stopped resource"); s.Proven || s.Objects != 7 || s.Server != "https://fake.example:6443" || s.Probes != 7 {
		t.Errorf("with a stopped resource: %+v, want unproven, 7 objects (5 + 2; stopped and not served hold none)", s)
	}
	delete(c.resources, "nodes/")
	clk.Step(2 * time.Second)
	if s := check("all served resources proven"); !s.Proven || s.StalenessSeconds != 11 {
		t.Errorf("all proven: %+v, want the largest bound, 11s (secrets, proven 9s before, 2s ago)", s)
	}
}
