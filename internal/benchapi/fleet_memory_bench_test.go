package benchapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/benchapi"
	"github.com/fleetcache/fleetcache/internal/fixtures"
	"github.com/fleetcache/fleetcache/internal/memstat"
)

// syntheticFleetPods is the size of BenchmarkSyntheticFleetMemory's fleet:
// FLEETCACHE_BENCH_FLEET_PODS (make bench sets 1,000,000); unset, the benchmark is
// skipped, as it takes minutes and about 3 GiB.
func syntheticFleetPods(b *testing.B) int {
	s := os.Getenv("FLEETCACHE_BENCH_FLEET_PODS")
	if s == "" {
		b.Skip("set FLEETCACHE_BENCH_FLEET_PODS (e.g. 1000000) to run it")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < syntheticClusters {
		b.Fatalf("FLEETCACHE_BENCH_FLEET_PODS=%q: want a number of pods, at least %d", s, syntheticClusters)
	}
	return n
}

const syntheticClusters = 10

// BenchmarkSyntheticFleetMemory caches a synthetic fleet of realistic pods
// (fixtures.FleetPod: about 9 KB of JSON each as an apiserver serves them, 500 apps per
// cluster, pods of one ReplicaSet alike) through fleetcache's whole path: 10 clusters,
// each a benchapi server streaming its pods to a watch-list informer, the compacting
// transform, the informer stores and one unified index. It reports the process's heap in
// use once every pod is cached (after two collections), the heap the cache holds per pod,
// and the sizes of a pod as served. Goal (#17): 1M pods in ≤ 2 GiB of heap.
func BenchmarkSyntheticFleetMemory(b *testing.B) {
	total := syntheticFleetPods(b)
	per := total / syntheticClusters
	total = per * syntheticClusters
	var served, trimmed int
	for i := range 1000 {
		p := fixtures.FleetPod(i%syntheticClusters, i*97)
		raw, _ := json.Marshal(p)
		served += len(raw)
		p.ManagedFields = nil
		raw, _ = json.Marshal(p)
		trimmed += len(raw)
	}
	for range b.N {
		var servers []*benchapi.Server
		for c := range syntheticClusters {
			servers = append(servers, benchapi.NewGenerated(per, func(i int) *corev1.Pod { return fixtures.FleetPod(c, i) }))
		}
		var before memstat.Report
		memstat.Measure(&before)
		h := countingHandler{Index: aggregator.New(nil, aggregator.Options{}), adds: newCountdown(total)}
		ctx, cancel := context.WithCancel(context.Background())
		var started []*clusters.Cluster
		start := time.Now()
		for i, s := range servers {
			c := clusters.New(clusters.Target{Name: fmt.Sprintf("cluster-%02d", i), Config: s.Config(), Fingerprint: "x"}, clusters.Options{
				Resources: []clusters.ResourceSpec{{Name: "pods"}}, Handler: h, ProbeInterval: time.Hour, RediscoveryInterval: time.Hour,
				// Generating a cluster's pods takes the server longer than a watch lasts.
				ListTimeout: time.Hour, IdleProofInterval: time.Hour,
			})
			go func() { _ = c.Start(ctx) }()
			started = append(started, c)
		}
		<-h.adds.done
		sync := time.Since(start)
		var after memstat.Report
		memstat.Measure(&after)
		if path := os.Getenv("FLEETCACHE_BENCH_HEAPPROFILE"); path != "" { // where the heap goes
			f, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
		cr, err := h.Count(context.Background(), aggregator.Query{Resource: "pods"}, nil)
		if err != nil || cr.Total != total {
			b.Fatalf("index holds %v pods (%v), want %d", cr, err, total)
		}
		b.ReportMetric(float64(total), "pods")
		b.ReportMetric(sync.Seconds(), "sync-s")
		b.ReportMetric(float64(after.HeapInuseBytes)/(1<<30), "heap-GiB")
		b.ReportMetric(float64(after.HeapAllocBytes-before.HeapAllocBytes)/float64(total), "cache-B/pod")
		b.ReportMetric(float64(after.RSSBytes)/(1<<30), "RSS-GiB")
		b.ReportMetric(float64(served)/1000, "served-json-B/pod")
		b.ReportMetric(float64(trimmed)/1000, "trimmed-json-B/pod")
		runtime.KeepAlive(h)
		cancel()
		for _, c := range started {
			<-c.Done()
		}
		for _, s := range servers {
			s.Close()
		}
	}
}
