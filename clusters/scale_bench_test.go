package clusters_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
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
	b.Logf("3 contexts: %s", base)
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
				b.ReportMetric((m.heapAfterStop-base.heap)/(1<<20), "heap-left-after-stop-MiB")
				b.Logf("%d contexts: %s", n, m)
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
}

func (m fleetCost) String() string {
	return fmt.Sprintf("heap %.0f MiB, RSS %.0f MiB, %.0f goroutines, all synced in %s, idle CPU %.1f%%, %.0f requests/s; heap after stop %.0f MiB",
		m.heap/(1<<20), m.rss/(1<<20), m.goroutines, m.synced.Round(100*time.Millisecond), m.idleCPU*100, m.requestsPerSecond, m.heapAfterStop/(1<<20))
}

func measureFleet(b *testing.B, n int) fleetCost {
	path := filepath.Join(b.TempDir(), "kubeconfig")
	if err := fleet.WriteManyContexts(path, n); err != nil {
		b.Fatal(err)
	}
	index := aggregator.New(nil, aggregator.Options{})
	f := clusters.NewFleet(clusters.KubeconfigSource{Paths: []string{path}}, clusters.FleetOptions{
		Cluster: clusters.Options{Handler: index, ListLimiter: clusters.NewListLimiter(4)},
		Logger:  zap.NewNop(),
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
			total += s.Probes
			for _, r := range s.Resources {
				total += r.Counters.Lists + r.Counters.WatchStarts
			}
		}
		return total
	}
	dir := os.Getenv("FLEETCACHE_SCALE_PROFILES")
	var cpuProfile *os.File
	if dir != "" {
		// Where the idle CPU goes.
		if out, err := os.Create(filepath.Join(dir, fmt.Sprintf("cpu-%d.pprof", n))); err == nil && pprof.StartCPUProfile(out) == nil {
			cpuProfile = out
		}
	}
	cpu0, req0, t0 := processCPU(), requests(), time.Now()
	time.Sleep(20 * time.Second)
	elapsed := time.Since(t0)
	if cpuProfile != nil {
		pprof.StopCPUProfile()
		cpuProfile.Close()
	}
	m.idleCPU = (processCPU() - cpu0).Seconds() / elapsed.Seconds()
	m.requestsPerSecond = float64(requests()-req0) / elapsed.Seconds()
	m.heap, m.goroutines, m.rss = liveHeap(), float64(runtime.NumGoroutine()), rss()
	if dir != "" {
		// Where the goroutines and the heap go, for BENCHMARKS.md.
		for _, name := range []string{"goroutine", "heap"} {
			if out, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", name, n))); err == nil {
				_ = pprof.Lookup(name).WriteTo(out, 0)
				out.Close()
			}
		}
	}
	cancel()
	<-done
	index = nil
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
