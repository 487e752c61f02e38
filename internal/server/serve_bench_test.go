package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/fixtures"
	"github.com/fleetcache/fleetcache/internal/kubeapi"
)

// syncedFleet is 10 Synced clusters, so that every answer carries per-cluster freshness.
type syncedFleet struct{ names []string }

func newSyncedFleet() *syncedFleet {
	f := &syncedFleet{}
	for i := range 10 {
		f.names = append(f.names, fmt.Sprintf("cluster-%02d", i))
	}
	return f
}

func (f *syncedFleet) Names() []string { return f.names }
func (f *syncedFleet) ClusterStatus(name string) (clusters.ClusterStatus, bool) {
	return clusters.ClusterStatus{Name: name, Condition: clusters.Condition{Phase: clusters.PhaseSynced},
		Resources: []clusters.ResourceStatus{{Condition: clusters.Condition{Phase: clusters.PhaseSynced}, Resource: "pods"}}}, true
}
func (f *syncedFleet) Status() []clusters.ClusterStatus {
	var out []clusters.ClusterStatus
	for _, n := range f.names {
		s, _ := f.ClusterStatus(n)
		out = append(out, s)
	}
	return out
}
func (f *syncedFleet) Readiness() []clusters.Readiness {
	var out []clusters.Readiness
	for _, n := range f.names {
		out = append(out, clusters.Readiness{Name: n, Condition: clusters.Condition{Phase: clusters.PhaseSynced}, Synced: true, EverSynced: true, Settled: true})
	}
	return out
}
func (f *syncedFleet) Loaded() bool                  { return true }
func (f *syncedFleet) LoadError() error              { return nil }
func (f *syncedFleet) Version(string) (string, bool) { return "v1.37.2", true }
func (f *syncedFleet) Freshness(string, string) (clusters.Freshness, bool) {
	return clusters.Freshness{Phase: clusters.PhaseSynced, ResourcePhase: clusters.PhaseSynced, Proven: true, Staleness: time.Second}, true
}

// servingIndex holds n pods in 10 clusters: "small" ones (as loadIndex) or realistic
// ones (fixtures.RealisticPod: a Deployment's pod, 9 KB of JSON before compaction).
// Built once per shape.
var serving = struct {
	sync.Mutex
	key string
	ix  *aggregator.Index
}{}

func servingIndex(b testing.TB, n int, realistic bool) *aggregator.Index {
	serving.Lock()
	defer serving.Unlock()
	key := fmt.Sprint(n, realistic)
	if serving.key == key {
		return serving.ix
	}
	serving.ix = nil
	runtime.GC()
	c, err := clusters.NewCompactor(corev1.SchemeGroupVersion.WithKind("Pod"), "pods")
	if err != nil {
		b.Fatal(err)
	}
	f := newSyncedFleet()
	ix := aggregator.New(f, aggregator.Options{HistorySize: 16})
	refs := make([]*clusters.InformerRef, 10)
	for i := range refs {
		refs[i] = &clusters.InformerRef{Cluster: f.names[i], Resource: "pods", Kind: "Pod", APIVersion: "v1", Namespaced: true, Names: []string{"pods"}, ID: uint64(i + 1)}
	}
	for i := range n {
		var p *corev1.Pod
		if realistic {
			p = fixtures.RealisticPod(i)
			p.Namespace = fmt.Sprintf("ns-%02d", i%50)
			p.Labels["app"] = fmt.Sprintf("app-%03d", i%200) // for selective lists
		} else {
			p = &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%02d", i%50), Name: fmt.Sprintf("pod-%07d", i), UID: types.UID(fmt.Sprint(i)), ResourceVersion: fmt.Sprint(i + 1),
					CreationTimestamp: metav1.NewTime(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)),
					Labels:            map[string]string{"app": fmt.Sprintf("app-%03d", i%200)}},
				Spec:   corev1.PodSpec{NodeName: fmt.Sprintf("node-%03d", i%300), Containers: []corev1.Container{{Name: "main", Image: "img:1"}}},
				Status: corev1.PodStatus{Phase: corev1.PodRunning},
			}
		}
		o, err := c.Compact(p)
		if err != nil {
			b.Fatal(err)
		}
		ix.OnAdd(refs[i%10], o)
	}
	serving.key, serving.ix = key, ix
	return ix
}

// discard is a ResponseWriter that counts and drops what it is sent: the server's own
// cost, without a client.
type discard struct {
	h           http.Header
	n           int64
	code        int
	first, last []byte
	// gcAt: once this much is written, a full collection measures the live heap into
	// peak: what the answer holds while it is being sent.
	gcAt int64
	peak *uint64
	b    *testing.B
}

func (d *discard) Header() http.Header { return d.h }
func (d *discard) Write(p []byte) (int, error) {
	if len(d.first) < 256 {
		d.first = append(d.first, p[:min(len(p), 256-len(d.first))]...)
	}
	d.n += int64(len(p))
	if d.gcAt > 0 && d.n >= d.gcAt {
		d.gcAt = 0
		d.b.StopTimer()
		runtime.GC()
		*d.peak = max(*d.peak, liveHeap())
		d.b.StartTimer()
	}
	d.last = append(d.last, p[max(0, len(p)-1024):]...)
	d.last = d.last[max(0, len(d.last)-1024):]
	return len(p), nil
}
func (d *discard) WriteHeader(code int) { d.code = code }

const tableAccept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"

// BenchmarkServeList is the server's cost per object of the answers that carry every
// object: a Table of all pods (kubectl get pods -A), the same as JSON objects (kubectl
// -o json), both answered whole up to the response cap and continued past it, and
// /api/v1/objects in pages of 5000, at 100k pods in 10 clusters, with per-cluster
// freshness and the cluster annotation. heap-MiB is how much
// the live heap grew while an answer was being sent (a full collection once 1 MiB of it
// is written).
func BenchmarkServeList(b *testing.B) {
	const n = 100_000
	for _, shape := range []struct {
		name      string
		realistic bool
	}{{"small-pods", false}, {"realistic-pods", true}} {
		for _, tc := range []struct {
			name, path, accept string
			pages              bool
		}{
			// Whole lists, cut at the response cap (32 MiB) and continued.
			{"kube-table", "/fleet/api/v1/pods?limit=500", tableAccept, true},
			{"kube-json", "/fleet/api/v1/pods?limit=500", "application/json", true},
			{"objects-pages", "/api/v1/objects?resource=pods&limit=5000", "", true},
			{"objects-table-pages", "/api/v1/objects?resource=pods&limit=5000&format=table", "", true},
		} {
			b.Run(shape.name+"/"+tc.name, func(b *testing.B) {
				ix := servingIndex(b, n, shape.realistic)
				srv := New(Options{Fleet: newSyncedFleet(), Index: ix, KubeAPI: &kubeapi.Handler{Index: ix, Fleet: newSyncedFleet()}})
				var bytes int64
				runtime.GC()
				base := liveHeap()
				var peak uint64
				b.ResetTimer()
				cpu0 := cpuTime()
				for range b.N {
					bytes = 0
					path := tc.path
					for {
						req := httptest.NewRequest(http.MethodGet, path, nil)
						if tc.accept != "" {
							req.Header.Set("Accept", tc.accept)
						}
						d := &discard{h: http.Header{}}
						if peak == 0 {
							d.gcAt, d.peak, d.b = 1<<20, &peak, b
						}
						srv.ServeHTTP(d, req)
						if d.code != 0 && d.code != http.StatusOK {
							b.Fatalf("%s: %d %s", path, d.code, d.first)
						}
						bytes += d.n
						if !tc.pages {
							break
						}
						cont := continueOf(b, d)
						if cont == "" {
							break
						}
						path = tc.path + "&continue=" + cont
					}
				}
				b.StopTimer()
				// CPU time as well: on a shared machine, less sensitive than wall time to
				// what else runs.
				b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N)/n/1000, "cpu-µs/object")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n/1000, "µs/object")
				b.ReportMetric(float64(bytes)/n, "B/object")
				if peak > base {
					b.ReportMetric(float64(peak-base)/(1<<20), "heap-MiB")
				} else {
					b.ReportMetric(0, "heap-MiB")
				}
			})
		}
	}
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// liveHeap is the heap that survived the last garbage collection: what is retained, not
// the garbage GOGC lets accumulate between collections.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// continueOf reads the continue token at the end of an ObjectList.
func continueOf(b *testing.B, d *discard) string {
	tail := string(d.last)
	i := strings.LastIndex(tail, `"continue":"`)
	if i < 0 {
		return ""
	}
	rest := tail[i+len(`"continue":"`):]
	end := strings.IndexByte(rest, '"')
	if end < 0 {
		b.Fatalf("no end to the continue token in %q", tail)
	}
	return url.QueryEscape(rest[:end])
}
