package clusters_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/metrics"
	"github.com/fleetcache/fleetcache/internal/server"
	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// BenchmarkPerClusterOverhead runs fleets of many kubeconfig contexts (spread over the
// test fleet's three real apiservers, each context its own client, connection, discovery
// and informers) caching the 13 default resources with default settings, into a unified
// index, and reports what each added cluster costs: live heap (after a GC), RSS and
// goroutines, relative to a 3-context fleet measured in the same run; the time until all
// are Synced; and the daemon's CPU while idle. Set FLEETCACHE_SCALE_CONTEXTS (default
// "100,300") to choose the sizes.
func BenchmarkPerClusterOverhead(b *testing.B) {
	if fleet == nil {
		b.Skip("needs the real fleet")
	}
	for _, c := range fleet.Clusters {
		if _, err := testfleet.Seed(context.Background(), c, testfleet.SeedOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	sizes := []int{100, 300}
	if s := os.Getenv("FLEETCACHE_SCALE_CONTEXTS"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatal(err)
			}
			sizes = append(sizes, n)
		}
	}
	base := measureFleet(b, 3)
	b.Logf("3 contexts: %s; answers %+v", base, base.answers)
	for _, n := range sizes {
		b.Run(fmt.Sprintf("contexts=%d", n), func(b *testing.B) {
			for range b.N {
				m := measureFleet(b, n)
				added := float64(n - 3)
				b.ReportMetric((m.heap-base.heap)/added/(1<<20), "heap-MiB/cluster")
				b.ReportMetric((m.rss-base.rss)/added/(1<<20), "rss-MiB/cluster")
				b.ReportMetric((m.goroutines-base.goroutines)/added, "goroutines/cluster")
				b.ReportMetric(m.synced.Seconds(), "all-synced-s")
				b.ReportMetric(m.idleCPU*100, "idle-cpu-%")
				b.ReportMetric(m.requestsPerSecond, "idle-requests/s")
				b.ReportMetric(m.idleAlloc/1e6, "idle-alloc-MB/s")
				b.ReportMetric(m.scale, "interval-scale")
				ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
				b.ReportMetric(ms(m.answers.clusters), "clusters-ms")
				b.ReportMetric(ms(m.answers.readyz), "readyz-verbose-ms")
				b.ReportMetric(ms(m.answers.metrics), "metrics-ms")
				b.ReportMetric(ms(m.answers.metricsClusterOnly), "metrics-cluster-only-ms")
				b.ReportMetric(ms(m.answers.metricsGzip), "metrics-gzip-ms")
				b.ReportMetric(ms(m.answers.metricsClusterOnlyGzip), "metrics-cluster-only-gzip-ms")
				b.ReportMetric((m.stacks-base.stacks)/added/(1<<10), "stack-KiB/cluster")
				b.ReportMetric(float64(m.answers.series)/float64(n), "series/cluster")
				b.ReportMetric(float64(m.answers.seriesClusterOnly)/float64(n), "cluster-only-series/cluster")
				b.ReportMetric((m.heapAfterStop-base.heap)/(1<<20), "heap-left-after-stop-MiB")
				b.Logf("%d contexts: %s; answers %+v", n, m, m.answers)
			}
		})
	}
}

type fleetCost struct {
	heap, rss, goroutines float64
	synced                time.Duration
	idleCPU               float64 // of one core
	requestsPerSecond     float64
	heapAfterStop         float64
	stacks                float64   // goroutine stacks in use (MemStats.StackInuse)
	idleAlloc             float64   // bytes allocated per second while idle
	idleGCs               uint32    // garbage collections while idle
	idleLists             [3]uint64 // while idle: lists (relists), failed lists, failed watches
	mem                   string    // where the RSS goes, from MemStats
	scale                 float64   // the probe budget's interval scale
	answers               answerCost
}

// answerCost is how long the status endpoints take to answer, whole (median of 5).
type answerCost struct {
	clusters, readyz, metrics, metricsClusterOnly time.Duration
	// the same scrapes as Prometheus makes them (its Accept header, gzip)
	metricsGzip, metricsClusterOnlyGzip time.Duration
	// series in one /metrics scrape (fleetcache_ ones), with and without per-resource ones
	series, seriesClusterOnly int
}

// measureAnswers times /api/v1/clusters, /readyz?verbose and /metrics (with and without
// the per-resource series) through the daemon's HTTP handler.
func measureAnswers(b *testing.B, f *clusters.Fleet, index *aggregator.Index) answerCost {
	handler := func(clusterOnly bool) http.Handler {
		reg := prometheus.NewRegistry()
		reg.MustRegister(metrics.NewCollector(f, metrics.Options{ClusterSeriesOnly: clusterOnly}))
		return server.New(server.Options{Fleet: f, Index: index, Gatherer: reg})
	}
	full, lean := handler(false), handler(true)
	timeIt := func(h http.Handler, path string, header ...string) (time.Duration, string) {
		// Each endpoint on its own: not paying for the garbage of the one timed before
		// (a per-resource scrape leaves hundreds of MB).
		runtime.GC()
		var ds []time.Duration
		var body string
		for range 5 {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, path, nil)
			for i := 0; i+1 < len(header); i += 2 {
				req.Header.Set(header[i], header[i+1])
			}
			start := time.Now()
			h.ServeHTTP(rec, req)
			ds = append(ds, time.Since(start))
			if rec.Code != http.StatusOK && !(path == "/readyz?verbose" && rec.Code == http.StatusServiceUnavailable) {
				b.Fatalf("%s: %d %s", path, rec.Code, rec.Body.String())
			}
			body = rec.Body.String()
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2], body
	}
	countSeries := func(body string) (n int) {
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "fleetcache_") {
				n++
			}
		}
		return n
	}
	var a answerCost
	var body string
	a.clusters, _ = timeIt(full, "/api/v1/clusters")
	a.readyz, _ = timeIt(full, "/readyz?verbose")
	a.metrics, body = timeIt(full, "/metrics")
	a.series = countSeries(body)
	a.metricsClusterOnly, body = timeIt(lean, "/metrics")
	a.seriesClusterOnly = countSeries(body)
	// What Prometheus sends when it scrapes.
	prom := []string{"Accept", "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
		"Accept-Encoding", "gzip"}
	a.metricsGzip, _ = timeIt(full, "/metrics", prom...)
	a.metricsClusterOnlyGzip, _ = timeIt(lean, "/metrics", prom...)
	return a
}

func (m fleetCost) String() string {
	return fmt.Sprintf("heap %.0f MiB, RSS %.0f MiB (%s), %.0f goroutines, all synced in %s, idle CPU %.1f%%, %.0f requests/s (interval scale %.2f), %.1f MB/s allocated and %d GCs while idle, %d lists (%d failed) and %d failed watches while idle; heap after stop %.0f MiB",
		m.heap/(1<<20), m.rss/(1<<20), m.mem, m.goroutines, m.synced.Round(100*time.Millisecond), m.idleCPU*100, m.requestsPerSecond, m.scale, m.idleAlloc/1e6, m.idleGCs, m.idleLists[0], m.idleLists[1], m.idleLists[2], m.heapAfterStop/(1<<20))
}

func measureFleet(b *testing.B, n int) fleetCost {
	goroutinesBefore := runtime.NumGoroutine()
	path := filepath.Join(b.TempDir(), "kubeconfig")
	if err := fleet.WriteManyContexts(path, n); err != nil {
		b.Fatal(err)
	}
	index := aggregator.New(nil, aggregator.Options{})
	budget := clusters.NewRequestBudget(clusters.DefaultProbeBudget)
	f := clusters.NewFleet(clusters.KubeconfigSource{Paths: []string{path}}, clusters.FleetOptions{
		// The daemon's defaults: 4 concurrent initial lists, the default probe budget.
		Cluster: clusters.Options{Handler: index, ListLimiter: clusters.NewListLimiter(4), Budget: budget},
		Logger:  benchLogger(b, n),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() { _ = f.Start(ctx); close(done) }()
	var m fleetCost
	deadline := time.Now().Add(10 * time.Minute)
	for {
		rs := f.Readiness()
		synced := 0
		for _, r := range rs {
			if r.Synced {
				synced++
			}
		}
		if len(rs) == n && synced == n {
			m.synced = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d contexts: %d synced after 10m", n, synced)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Idle: settle, then measure CPU and the requests fleetcache makes.
	time.Sleep(5 * time.Second)
	requests := func() (total uint64) {
		for _, s := range f.Status() {
			total += s.Probes + s.DiscoveryRequests
			for _, r := range s.Resources {
				total += r.Counters.Lists + r.Counters.WatchStarts
			}
		}
		return total
	}
	// Lists (relists included) and failed list and watch calls, for what happens while idle.
	lists := func() (n [3]uint64) {
		for _, s := range f.Status() {
			for _, r := range s.Resources {
				n[0] += r.Counters.Lists
				n[1] += r.Counters.ListErrors
				n[2] += r.Counters.WatchErrors
			}
		}
		return n
	}
	lists0 := lists()
	dir := os.Getenv("FLEETCACHE_SCALE_PROFILES")
	var cpuProfile *os.File
	if dir != "" {
		// Where the idle CPU goes.
		if out, err := os.Create(filepath.Join(dir, fmt.Sprintf("cpu-%d.pprof", n))); err == nil && pprof.StartCPUProfile(out) == nil {
			cpuProfile = out
		}
		// What the idle daemon allocates: the allocs profile at the end, less this one.
		if out, err := os.Create(filepath.Join(dir, fmt.Sprintf("allocs-idle-start-%d.pprof", n))); err == nil {
			_ = pprof.Lookup("allocs").WriteTo(out, 0)
			out.Close()
		}
	}
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0, req0, t0 := processCPU(), requests(), time.Now()
	time.Sleep(idleWindow(b, n))
	elapsed := time.Since(t0)
	if cpuProfile != nil {
		pprof.StopCPUProfile()
		cpuProfile.Close()
	}
	m.idleCPU = (processCPU() - cpu0).Seconds() / elapsed.Seconds()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	m.idleAlloc = float64(ms1.TotalAlloc-ms0.TotalAlloc) / elapsed.Seconds()
	m.idleGCs = ms1.NumGC - ms0.NumGC
	if dir != "" {
		if out, err := os.Create(filepath.Join(dir, fmt.Sprintf("allocs-idle-end-%d.pprof", n))); err == nil {
			_ = pprof.Lookup("allocs").WriteTo(out, 0)
			out.Close()
		}
	}
	m.requestsPerSecond = float64(requests()-req0) / elapsed.Seconds()
	lists1 := lists()
	m.idleLists = [3]uint64{lists1[0] - lists0[0], lists1[1] - lists0[1], lists1[2] - lists0[2]}
	m.heap, m.goroutines, m.rss = liveHeap(), float64(runtime.NumGoroutine()), rss()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.stacks = float64(ms.StackInuse)
	mib := func(v uint64) uint64 { return v >> 20 }
	m.mem = fmt.Sprintf("heap in use %d MiB, heap free not returned %d MiB, next GC at %d MiB, stacks %d MiB, runtime (spans, GC, other) %d MiB, sys %d MiB",
		mib(ms.HeapInuse), mib(ms.HeapIdle-ms.HeapReleased), mib(ms.NextGC), mib(ms.StackSys), mib(ms.MSpanSys+ms.MCacheSys+ms.BuckHashSys+ms.GCSys+ms.OtherSys), mib(ms.Sys))
	m.scale = budget.Scale()
	if dir != "" {
		// Where the goroutines and the heap go, for BENCHMARKS.md.
		for _, name := range []string{"goroutine", "heap"} {
			if out, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", name, n))); err == nil {
				_ = pprof.Lookup(name).WriteTo(out, 0)
				out.Close()
			}
		}
	}
	m.answers = measureAnswers(b, f, index)
	cancel()
	<-done
	index = nil
	// Clusters that outlast the fleet's stop timeout are abandoned, not gone: wait until
	// their goroutines have ended before reading what stays.
	for deadline := time.Now().Add(2 * time.Minute); runtime.NumGoroutine() > goroutinesBefore+2 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	m.heapAfterStop = liveHeap()
	if dir != "" {
		// What a stopped fleet still holds.
		if out, err := os.Create(filepath.Join(dir, fmt.Sprintf("heap-after-stop-%d.pprof", n))); err == nil {
			_ = pprof.Lookup("heap").WriteTo(out, 0)
			out.Close()
		}
		if out, err := os.Create(filepath.Join(dir, fmt.Sprintf("goroutine-after-stop-%d.pprof", n))); err == nil {
			_ = pprof.Lookup("goroutine").WriteTo(out, 1)
			out.Close()
		}
	}
	return m
}

func liveHeap() float64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc)
}

// rss reads the process's resident set from /proc.
func rss() float64 {
	raw, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(raw))
	pages, _ := strconv.ParseFloat(fields[1], 64)
	return pages * float64(os.Getpagesize())
}

// processCPU is the CPU time (user + system) the process has used.
func processCPU() time.Duration {
	raw, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name (which is in parentheses and may hold spaces).
	fields := strings.Fields(string(raw)[strings.LastIndexByte(string(raw), ')')+2:])
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration((utime + stime) / ticks * float64(time.Second))
}

// idleWindow is how long idle CPU and requests are measured: FLEETCACHE_SCALE_IDLE
// (default 20s; the 3-context baseline always 20s). Steady state needs a whole
// idle-proof cycle (IdleProofInterval times the probe budget's scale: about 5.6 minutes
// at 1,000 clusters).
func idleWindow(b *testing.B, n int) time.Duration {
	if s := os.Getenv("FLEETCACHE_SCALE_IDLE"); s != "" && n > 3 {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	return 20 * time.Second
}

// benchLogger logs to FLEETCACHE_SCALE_LOG-<n> when that is set (phase changes, with their
// reasons), else nowhere.
func benchLogger(b *testing.B, n int) *zap.Logger {
	path := os.Getenv("FLEETCACHE_SCALE_LOG")
	if path == "" {
		return zap.NewNop()
	}
	cfg := zap.NewProductionConfig()
	cfg.OutputPaths = []string{fmt.Sprintf("%s-%d", path, n)}
	cfg.Sampling = nil
	log, err := cfg.Build()
	if err != nil {
		b.Fatal(err)
	}
	return log
}
