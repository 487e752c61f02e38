package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fleetcache/fleetcache/clusters"
)

// bigFleet is n Synced clusters of 13 proven resources each, with the counters and
// histograms an idle resource has after its initial sync.
func bigFleet(n int) fakeSource {
	names := []string{"configmaps", "cronjobs.batch", "daemonsets.apps", "deployments.apps", "events.events.k8s.io", "ingresses.networking.k8s.io",
		"jobs.batch", "namespaces", "nodes", "persistentvolumeclaims", "replicasets.apps", "services", "statefulsets.apps"}
	synced := clusters.Condition{Phase: clusters.PhaseSynced}
	out := make(fakeSource, n)
	for i := range out {
		cs := clusters.ClusterStatus{
			Condition: synced, Name: fmt.Sprintf("cluster-%04d", i), Context: fmt.Sprintf("ctx-%04d", i), Server: "https://10.0.0.1:6443",
			Version: "v1.37.2", InitialSyncTime: at(-time.Hour), LastProbeTime: at(-time.Second), Probes: 100, StalenessSeconds: f64(30),
		}
		for _, r := range names {
			buckets := func(bounds []float64) map[float64]uint64 {
				m := make(map[float64]uint64, len(bounds))
				for j, b := range bounds {
					m[b] = uint64(j)
				}
				return m
			}
			cs.Resources = append(cs.Resources, clusters.ResourceStatus{
				Condition: synced, Resource: r, Objects: 13, WatchConnected: true, StalenessSeconds: f64(30),
				LastListTime: at(-time.Hour), LastEventTime: at(-time.Minute),
				Counters: clusters.Counters{
					Lists: 1, WatchStarts: 10, Events: map[string]uint64{"ADDED": 13, "BOOKMARK": 10},
					ListDuration:     clusters.Histogram{Buckets: buckets(clusters.ListBuckets), Count: 1, Sum: 0.05},
					SyncLag:          clusters.Histogram{Buckets: buckets(clusters.LagBuckets), Count: 10, Sum: 30},
					LastBookmarkTime: at(-time.Minute), InitialSyncDuration: time.Second, Probed: true,
				},
			})
		}
		out[i] = cs
	}
	return out
}

// BenchmarkScrape scrapes 1,000 clusters of 13 resources through promhttp, as plain
// text and as Prometheus asks (its Accept header, gzip), with and without the
// per-resource series. The fake source's statuses are built once: this is the
// collector's and the exposition's cost, not the fleet's (BenchmarkPerClusterOverhead in
// clusters measures the whole).
func BenchmarkScrape(b *testing.B) {
	src := bigFleet(1000)
	for _, clusterOnly := range []bool{true, false} {
		reg := prometheus.NewRegistry()
		reg.MustRegister(NewCollector(src, Options{ClusterSeriesOnly: clusterOnly}))
		h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
		for _, gz := range []bool{false, true} {
			b.Run(fmt.Sprintf("clusterOnly=%v/gzip=%v", clusterOnly, gz), func(b *testing.B) {
				b.ReportAllocs()
				var size int
				for range b.N {
					req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
					if gz {
						req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
						req.Header.Set("Accept-Encoding", "gzip")
					}
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != http.StatusOK {
						b.Fatal(rec.Code)
					}
					size = rec.Body.Len()
				}
				b.ReportMetric(float64(size), "bytes")
			})
		}
	}
	_ = io.Discard
}
