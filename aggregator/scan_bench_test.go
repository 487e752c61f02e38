package aggregator

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/fixtures"
)

// scanFleet is a fleet of realistic pods (fixtures.FleetPod: about 9 KB of JSON each as
// served, 500 apps per cluster, pods of one ReplicaSet alike) in 10 clusters, each
// cluster compacted by a Compactor of its own as its informer would (its own dictionary),
// kept compressed. FLEETCACHE_BENCH_SCAN_PODS sets its size (default 1,000,000: building
// it takes a minute or two on 2 cores and about 2 GiB). Built once per process.
var scanFleet = struct {
	sync.Mutex
	ix         *Index
	n          int
	refs       []*clusters.InformerRef
	compactors []*clusters.Compactor
}{}

const scanClusters = 10

func scanFleetIndex(b *testing.B) (*Index, int) {
	scanFleet.Lock()
	defer scanFleet.Unlock()
	if scanFleet.ix != nil {
		return scanFleet.ix, scanFleet.n
	}
	n := 1_000_000
	if s := os.Getenv("FLEETCACHE_BENCH_SCAN_PODS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < scanClusters {
			b.Fatalf("FLEETCACHE_BENCH_SCAN_PODS=%q: want a number of pods, at least %d", s, scanClusters)
		}
	}
	synthetic.Lock() // one large index in memory at a time
	clear(synthetic.byN)
	synthetic.Unlock()
	start := time.Now()
	ix := New(nil, Options{HistorySize: 16})
	per := n / scanClusters
	refs := make([]*clusters.InformerRef, scanClusters)
	compactors := make([]*clusters.Compactor, scanClusters)
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				c := int(next.Add(1)) - 1
				if c >= scanClusters {
					return
				}
				refs[c] = podRef(fmt.Sprintf("cluster-%02d", c), uint64(c+1))
				cp, err := clusters.NewCompactor(corev1.SchemeGroupVersion.WithKind("Pod"), "pods")
				if err != nil {
					b.Error(err)
					return
				}
				compactors[c] = cp
				for i := range per {
					o, err := cp.Compact(fixtures.FleetPod(c, i))
					if err != nil {
						b.Error(err)
						return
					}
					ix.OnAdd(refs[c], o)
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	runtime.GC()
	b.Logf("built %d realistic pods in %d clusters in %s", per*scanClusters, scanClusters, time.Since(start).Round(time.Second))
	scanFleet.ix, scanFleet.n, scanFleet.refs, scanFleet.compactors = ix, per*scanClusters, refs, compactors
	return ix, scanFleet.n
}

// fieldCount is the query: a count with a field selector no index answers
// (count?resource=pods&fieldSelector=spec.schedulerName=x), over the whole fleet.
var fieldCount = Query{Resource: "pods", FieldSelector: fields.ParseSelectorOrDie("spec.schedulerName=x")}

// BenchmarkFieldScan counts the fleet's pods with a field selector no index answers,
// reading the field from each pod's stored bytes ("stored") and, in the same run, by
// decoding each pod as every such query did before clusters.FieldReader ("decoded"); and
// grouped by such a field ("stored-groupby"). It reports, per object, wall time, the
// process's CPU time (on a machine shared with other work, the figure that load does not
// inflate) and allocations.
func BenchmarkFieldScan(b *testing.B) {
	ix, n := scanFleetIndex(b)
	for _, tc := range []struct {
		name    string
		decode  bool
		q       Query
		groupBy []string
		total   int
	}{
		{"stored", false, fieldCount, nil, 0},
		{"stored-groupby", false, Query{Resource: "pods"}, []string{"field:spec.schedulerName"}, n},
		{"decoded", true, fieldCount, nil, 0},
	} {
		b.Run(tc.name, func(b *testing.B) {
			decodeFields = tc.decode
			defer func() { decodeFields = false }()
			b.ReportAllocs()
			b.ResetTimer()
			cpu := processCPU()
			for range b.N {
				res, err := ix.Count(context.Background(), tc.q, tc.groupBy)
				if err != nil {
					b.Fatal(err)
				}
				if res.Total != tc.total {
					b.Fatalf("counted %d, want %d", res.Total, tc.total)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU()-cpu).Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/object")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/object")
			b.ReportMetric(float64(n), "objects")
		})
	}
}

// BenchmarkScanLoad measures, on the fleet of BenchmarkFieldScan, what ingest and cheap
// queries on the scanned clusters wait while scanners (0, then 4 goroutines) run the
// issue's field count (every pod, no index) over and over: for a fixed time, one
// informer-style update every 10 ms (a pod of a scanned cluster compacted as its informer
// would, stored, then read back: from the call to the moment a Get returns it), one count
// of the fleet by cluster (the cheap count, answered from counters) and one get
// every 10 ms, each from a goroutine of its own. It reports their p50, p99 and worst latency, and the scans
// completed. The scanners run as the index runs them (each count on every core, no
// admission): the server's admission only makes it easier.
func BenchmarkScanLoad(b *testing.B) {
	ix, _ := scanFleetIndex(b)
	duration := 30 * time.Second
	if s := os.Getenv("FLEETCACHE_BENCH_SCAN_SECONDS"); s != "" {
		secs, err := strconv.Atoi(s)
		if err != nil {
			b.Fatal(err)
		}
		duration = time.Duration(secs) * time.Second
	}
	type key struct{ cluster, ns, name string }
	keys := make([]key, 1000)
	for i := range keys {
		p := fixtures.FleetPod(i%scanClusters, i*7919%1000)
		keys[i] = key{fmt.Sprintf("cluster-%02d", i%scanClusters), p.Namespace, p.Name}
	}
	for _, scanners := range []int{0, 4} {
		b.Run(fmt.Sprintf("scanners=%d", scanners), func(b *testing.B) {
			runtime.GC()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var scans atomic.Int64
			var wg sync.WaitGroup
			for range scanners {
				wg.Go(func() {
					for ctx.Err() == nil {
						if _, err := ix.Count(ctx, fieldCount, nil); err == nil {
							scans.Add(1)
						}
					}
				})
			}
			probe := func(op func(i int)) func() []time.Duration {
				var lat []time.Duration
				done := make(chan struct{})
				wg.Go(func() {
					defer close(done)
					t := time.NewTicker(10 * time.Millisecond)
					defer t.Stop()
					deadline := time.Now().Add(duration)
					for i := 0; time.Now().Before(deadline); i++ {
						<-t.C
						start := time.Now()
						op(i)
						lat = append(lat, time.Since(start))
					}
				})
				return func() []time.Duration { <-done; return lat }
			}
			b.ResetTimer()
			ingest := probe(func(i int) { scanIngest(b, ix, i) })
			counts := probe(func(i int) {
				res, err := ix.Count(ctx, Query{Resource: "pods"}, []string{"cluster"})
				if err != nil || res.Total == 0 {
					b.Errorf("count: %v", err)
				}
			})
			gets := probe(func(i int) {
				k := keys[i%len(keys)]
				if _, err := ix.Get(k.cluster, "pods", k.ns, k.name); err != nil {
					b.Errorf("get: %v", err)
				}
			})
			results := map[string][]time.Duration{"ingest": ingest(), "count": counts(), "get": gets()}
			cancel()
			wg.Wait()
			b.StopTimer()
			for _, name := range []string{"ingest", "count", "get"} {
				lat := results[name]
				slices.Sort(lat)
				ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
				b.ReportMetric(ms(lat[len(lat)/2]), name+"-p50-ms")
				b.ReportMetric(ms(lat[len(lat)*99/100]), name+"-p99-ms")
				b.ReportMetric(ms(lat[len(lat)-1]), name+"-max-ms")
			}
			b.ReportMetric(float64(scans.Load())/duration.Seconds(), "scans/s")
		})
	}
}

// processCPU is the CPU time the process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// scanIngest stores update i of a pod of one of the fleet's clusters as its informer
// would (the transform, then the store), and reads it back.
func scanIngest(b *testing.B, ix *Index, i int) {
	c := i % scanClusters
	p := fixtures.FleetPod(c, i*7919%1000)
	rv := fmt.Sprint(5_000_000 + i)
	p.ResourceVersion = rv
	p.Labels["rev"] = rv
	o, err := scanFleet.compactors[c].Compact(p)
	if err != nil {
		b.Error(err)
		return
	}
	ix.OnUpdate(scanFleet.refs[c], nil, o)
	it, err := ix.Get(scanFleet.refs[c].Cluster, "pods", p.Namespace, p.Name)
	if err != nil || it.Object.ResourceVersion != rv {
		b.Errorf("update %d not visible: %v", i, err)
	}
}
