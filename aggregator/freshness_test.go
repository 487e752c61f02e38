package aggregator

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fleetcache/fleetcache/clusters"
)

// fakeFreshness serves fixed freshness per cluster.
type fakeFreshness struct {
	loaded bool
	f      map[string]clusters.Freshness
}

func (s fakeFreshness) Names() []string {
	var out []string
	for n := range s.f {
		out = append(out, n)
	}
	return out
}
func (s fakeFreshness) Loaded() bool { return s.loaded }
func (s fakeFreshness) Freshness(cluster, _ string) (clusters.Freshness, bool) {
	f, ok := s.f[cluster]
	return f, ok
}

func TestAnswersArePartialUnlessEveryClusterIsProvenCurrent(t *testing.T) {
	synced := clusters.Freshness{Phase: clusters.PhaseSynced, ResourcePhase: clusters.PhaseSynced, Proven: true, Staleness: 1500 * time.Millisecond}
	stale := clusters.Freshness{Phase: clusters.PhaseSynced, ResourcePhase: clusters.PhaseDegraded, ResourceReason: clusters.ReasonStale, Proven: true, Staleness: 40 * time.Second}
	syncing := clusters.Freshness{Phase: clusters.PhaseSyncing, ResourcePhase: clusters.PhaseSyncing}
	notServed := clusters.Freshness{Phase: clusters.PhaseSynced, ResourcePhase: clusters.PhaseNotServed, Proven: true}
	for _, tc := range []struct {
		name    string
		src     fakeFreshness
		partial bool
	}{
		{"all synced", fakeFreshness{loaded: true, f: map[string]clusters.Freshness{"a": synced, "b": notServed}}, false},
		{"one stale", fakeFreshness{loaded: true, f: map[string]clusters.Freshness{"a": synced, "b": stale}}, true},
		{"one in its initial sync", fakeFreshness{loaded: true, f: map[string]clusters.Freshness{"a": synced, "b": syncing}}, true},
		{"clusters not loaded yet", fakeFreshness{loaded: false, f: map[string]clusters.Freshness{}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix := New(tc.src, Options{})
			ref := &clusters.InformerRef{Cluster: "a", Resource: "configmaps", Kind: "ConfigMap", APIVersion: "v1", Namespaced: true, ID: 1}
			c, err := clusters.NewCompactor(corev1.SchemeGroupVersion.WithKind("ConfigMap"), "configmaps")
			if err != nil {
				t.Fatal(err)
			}
			obj, err := c.Compact(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "default", ResourceVersion: "5"}})
			if err != nil {
				t.Fatal(err)
			}
			ix.OnAdd(ref, obj)
			res, err := ix.List(context.Background(), Query{Resource: "configmaps"})
			if err != nil {
				t.Fatal(err)
			}
			if res.Partial != tc.partial {
				t.Errorf("partial = %v, want %v (%+v)", res.Partial, tc.partial, res.Clusters)
			}
			for _, f := range res.Clusters {
				want := tc.src.f[f.Cluster]
				if want.Proven != (f.StalenessSeconds != nil) || f.StalenessSeconds != nil && *f.StalenessSeconds != want.Staleness.Seconds() {
					t.Errorf("%s: staleness %v, want %v (proven %v)", f.Cluster, f.StalenessSeconds, want.Staleness, want.Proven)
				}
				if f.ResourceReason != want.ResourceReason {
					t.Errorf("%s: resource reason %q, want %q", f.Cluster, f.ResourceReason, want.ResourceReason)
				}
			}
		})
	}
}
