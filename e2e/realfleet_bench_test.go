package e2e

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/testfleet"
)

var bigSeed struct {
	sync.Mutex
	pods int
}

// seedBig grows every cluster of the fleet to at least podsPerCluster pods.
func seedBig(b *testing.B, podsPerCluster int) {
	bigSeed.Lock()
	defer bigSeed.Unlock()
	if bigSeed.pods >= podsPerCluster {
		return
	}
	func() {
		var wg sync.WaitGroup
		errs := make(chan error, len(fleet.Clusters))
		start := time.Now()
		for _, c := range fleet.Clusters {
			wg.Go(func() {
				if _, err := testfleet.Seed(context.Background(), c, testfleet.SeedOptions{Pods: podsPerCluster, Concurrency: 48}); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		b.Logf("seeded %d pods per cluster in %s", podsPerCluster, time.Since(start).Round(time.Second))
	}()
	bigSeed.pods = podsPerCluster
}

const bigPods = 10_000

// syncFleet starts an in-process fleet caching pods through the reader contexts and
// returns the time until every cluster is synced.
func syncFleet(b *testing.B, maxLists int) time.Duration {
	filter := clusters.ContextFilter{Include: []string{"*-reader"}, Aliases: map[string]string{}}
	for _, c := range fleet.Clusters {
		filter.Aliases[c.Name+"-reader"] = c.Name
	}
	f := clusters.NewFleet(clusters.KubeconfigSource{Paths: []string{fleet.Kubeconfig}, Filter: filter}, clusters.FleetOptions{Cluster: clusters.Options{
		Resources: []clusters.ResourceSpec{{Name: "pods"}}, ListLimiter: clusters.NewListLimiter(maxLists), ProbeInterval: time.Hour,
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	go func() { _ = f.Start(ctx) }()
	for {
		synced := 0
		for _, s := range f.Status() {
			if s.InitialSyncTime != nil {
				synced++
			}
		}
		if synced == len(fleet.Clusters) {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkRealFleetInitialSync syncs 3 real clusters of 10k pods each, with the lists
// in parallel and one after another (maxConcurrentInitialLists 1), in the same run.
func BenchmarkRealFleetInitialSync(b *testing.B) {
	startDaemon(b)
	seedBig(b, bigPods)
	var par, seq time.Duration
	for range b.N {
		par += syncFleet(b, len(fleet.Clusters))
		seq += syncFleet(b, 1)
	}
	b.ReportMetric(par.Seconds()/float64(b.N), "parallel-s")
	b.ReportMetric(seq.Seconds()/float64(b.N), "sequential-s")
	b.ReportMetric(seq.Seconds()/par.Seconds(), "speedup")
}

// BenchmarkRealFleetQueryVsKubectl is BenchmarkFleetQueryVsKubectl at 10k pods per
// cluster.
func BenchmarkRealFleetQueryVsKubectl(b *testing.B) {
	d := startDaemon(b)
	seedBig(b, bigPods)
	waitFor(b, 120*time.Second, "daemon caught up", func() (bool, string) {
		got, want := len(apiSet(b, d, url.Values{"resource": {"pods"}, "limit": {"5000"}})), len(kubectlSet(b, "pods", "-A"))
		return got == want, fmt.Sprintf("%d vs %d", got, want)
	})
	BenchmarkFleetQueryVsKubectl(b)
}

// BenchmarkDaemonRSS reports the daemon's resident memory against the objects it caches.
func BenchmarkDaemonRSS(b *testing.B) {
	d := startDaemon(b)
	seedBig(b, bigPods)
	var objects float64
	waitFor(b, 120*time.Second, "daemon caught up", func() (bool, string) {
		fams := d.scrape(b)
		objects = 0
		if f := fams["fleetcache_objects"]; f != nil {
			for _, m := range f.Metric {
				objects += m.Gauge.GetValue()
			}
		}
		return objects >= float64(bigPods*len(fleet.Clusters)), fmt.Sprintf("%v objects", objects)
	})
	for range b.N {
		rss, _ := value(d.scrape(b), "process_resident_memory_bytes", nil)
		b.ReportMetric(rss/(1<<20), "rss-MiB")
		b.ReportMetric(objects, "objects")
		b.ReportMetric(rss/objects, "rss-B/obj")
	}
}
