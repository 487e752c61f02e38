package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/fixtures"
)

// fieldFleet is a fleet of realistic pods (fixtures.FleetPod) in the 10 clusters of
// newSyncedFleet, each cluster compacted by a Compactor of its own as its informer would,
// kept compressed. FLEETCACHE_BENCH_SCAN_PODS sets its size (default 1,000,000: a minute
// or two to build on 2 cores, about 2 GiB).
type fieldFleet struct {
	ix         *aggregator.Index
	n          int
	refs       []*clusters.InformerRef
	compactors []*clusters.Compactor
}

func buildFieldFleet(b *testing.B) *fieldFleet {
	n := 1_000_000
	if s := os.Getenv("FLEETCACHE_BENCH_SCAN_PODS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 10 {
			b.Fatalf("FLEETCACHE_BENCH_SCAN_PODS=%q: want a number of pods, at least 10", s)
		}
	}
	serving.Lock() // one large index in memory at a time
	serving.ix, serving.key = nil, ""
	serving.Unlock()
	names := newSyncedFleet().names
	f := &fieldFleet{ix: aggregator.New(newSyncedFleet(), aggregator.Options{HistorySize: 16}), n: n / len(names) * len(names),
		refs: make([]*clusters.InformerRef, len(names)), compactors: make([]*clusters.Compactor, len(names))}
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for c := int(next.Add(1)) - 1; c < len(names); c = int(next.Add(1)) - 1 {
				f.refs[c] = &clusters.InformerRef{Cluster: names[c], Resource: "pods", Kind: "Pod", APIVersion: "v1", Namespaced: true, Names: []string{"pods"}, ID: uint64(c + 1)}
				cp, err := clusters.NewCompactor(corev1.SchemeGroupVersion.WithKind("Pod"), "pods")
				if err != nil {
					b.Error(err)
					return
				}
				f.compactors[c] = cp
				for i := range n / len(names) {
					o, err := cp.Compact(fixtures.FleetPod(c, i))
					if err != nil {
						b.Error(err)
						return
					}
					f.ix.OnAdd(f.refs[c], o)
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	runtime.GC()
	b.Logf("built %d realistic pods in %d clusters in %s", f.n, len(names), time.Since(start).Round(time.Second))
	return f
}

// update stores update i of a pod of one of the fleet's clusters as its informer would
// (the compacting transform, then the store) and reads it back from the index.
func (f *fieldFleet) update(b *testing.B, i int) {
	c := i % len(f.refs)
	p := fixtures.FleetPod(c, i*7919%1000)
	rv := fmt.Sprint(5_000_000 + i)
	p.ResourceVersion, p.Labels["rev"] = rv, rv
	o, err := f.compactors[c].Compact(p)
	if err != nil {
		b.Error(err)
		return
	}
	f.ix.OnUpdate(f.refs[c], nil, o)
	if it, err := f.ix.Get(f.refs[c].Cluster, "pods", p.Namespace, p.Name); err != nil || it.Object.ResourceVersion != rv {
		b.Errorf("update %d not visible: %v", i, err)
	}
}

// BenchmarkFieldCountLoad is the measurement through the HTTP API, with the
// server's admission: 4 clients (0 for the baseline, in the same run) repeat
// count?resource=pods&fieldSelector=spec.schedulerName=x over the fleet (no index
// answers it: every pod's field is read), each on its own connection, while for a fixed
// time, every 10 ms each: an informer-style update of a pod of a scanned cluster (from
// the transform to the moment a get returns it), a cheap count?resource=pods&groupBy=
// cluster and a get of one pod, each from a client of its own. It reports their p50, p99
// and worst latency, and the field counts answered per second and their own p50.
func BenchmarkFieldCountLoad(b *testing.B) {
	f := buildFieldFleet(b)
	duration := 30 * time.Second
	if s := os.Getenv("FLEETCACHE_BENCH_SCAN_SECONDS"); s != "" {
		secs, err := strconv.Atoi(s)
		if err != nil {
			b.Fatal(err)
		}
		duration = time.Duration(secs) * time.Second
	}
	srv := httptest.NewServer(New(Options{Fleet: newSyncedFleet(), Index: f.ix}))
	defer srv.Close()
	gets := make([]string, 1000)
	for i := range gets {
		p := fixtures.FleetPod(i%10, i*7919%1000)
		gets[i] = fmt.Sprintf("%s/api/v1/objects/cluster-%02d/pods/%s/%s", srv.URL, i%10, p.Namespace, p.Name)
	}
	ask := func(client *http.Client, u string) (int, error) {
		resp, err := client.Get(u)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for _, scanners := range []int{0, 4} {
		b.Run(fmt.Sprintf("clients=%d", scanners), func(b *testing.B) {
			runtime.GC()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var wg sync.WaitGroup
			var scanMu sync.Mutex
			var scanLat []time.Duration
			var refused atomic.Int64
			for range scanners {
				wg.Go(func() {
					client := &http.Client{Transport: &http.Transport{}}
					defer client.CloseIdleConnections()
					for ctx.Err() == nil {
						start := time.Now()
						code, err := ask(client, srv.URL+"/api/v1/count?resource=pods&fieldSelector=spec.schedulerName%3Dx")
						switch {
						case err != nil || ctx.Err() != nil:
						case code == http.StatusOK:
							scanMu.Lock()
							scanLat = append(scanLat, time.Since(start))
							scanMu.Unlock()
						default:
							refused.Add(1)
						}
					}
				})
			}
			probe := func(op func(client *http.Client, i int)) func() []time.Duration {
				var lat []time.Duration
				done := make(chan struct{})
				go func() {
					defer close(done)
					client := &http.Client{Transport: &http.Transport{}}
					defer client.CloseIdleConnections()
					t := time.NewTicker(10 * time.Millisecond)
					defer t.Stop()
					deadline := time.Now().Add(duration)
					for i := 0; time.Now().Before(deadline); i++ {
						<-t.C
						start := time.Now()
						op(client, i)
						lat = append(lat, time.Since(start))
					}
				}()
				return func() []time.Duration { <-done; return lat }
			}
			b.ResetTimer()
			ingest := probe(func(_ *http.Client, i int) { f.update(b, i) })
			counts := probe(func(client *http.Client, i int) {
				if code, err := ask(client, srv.URL+"/api/v1/count?resource=pods&groupBy=cluster"); err != nil || code != http.StatusOK {
					b.Errorf("count: %d %v", code, err)
				}
			})
			get := probe(func(client *http.Client, i int) {
				if code, err := ask(client, gets[i%len(gets)]); err != nil || code != http.StatusOK {
					b.Errorf("get: %d %v", code, err)
				}
			})
			results := [][]time.Duration{ingest(), counts(), get()}
			cancel()
			srv.CloseClientConnections()
			wg.Wait()
			b.StopTimer()
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			for k, name := range []string{"ingest", "count", "get"} {
				lat := results[k]
				slices.Sort(lat)
				b.ReportMetric(ms(lat[len(lat)/2]), name+"-p50-ms")
				b.ReportMetric(ms(lat[len(lat)*99/100]), name+"-p99-ms")
				b.ReportMetric(ms(lat[len(lat)-1]), name+"-max-ms")
			}
			if scanners > 0 {
				slices.Sort(scanLat)
				b.ReportMetric(float64(len(scanLat))/duration.Seconds(), "field-counts/s")
				if len(scanLat) > 0 {
					b.ReportMetric(ms(scanLat[len(scanLat)/2]), "field-count-p50-ms")
				}
				b.ReportMetric(float64(refused.Load()), "field-counts-refused")
			}
		})
	}
}
