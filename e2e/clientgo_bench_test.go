package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// syncPods starts a client-go pods informer on each config at once and returns the time
// until all are synced and how many pods they hold.
func syncPods(b *testing.B, cfgs ...*rest.Config) (time.Duration, int) {
	b.Helper()
	stop := make(chan struct{})
	defer close(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for _, cfg := range cfgs {
		wg.Go(func() {
			inf := informers.NewSharedInformerFactory(kubernetes.NewForConfigOrDie(cfg), 0).Core().V1().Pods().Informer()
			go inf.Run(stop)
			if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
				b.Errorf("%s: pods informer not synced", cfg.Host)
				return
			}
			mu.Lock()
			total += len(inf.GetStore().ListKeys())
			mu.Unlock()
		})
	}
	wg.Wait()
	return time.Since(start), total
}

// BenchmarkClientGoInformerSync measures a client-go pods informer (WatchList, the
// default; protobuf, as typed clientsets ask) syncing the whole fleet through fleetcache's
// `fleet` context against three informers straight at the three apiservers started
// together, in the same run; and the same fleetcache informer with JSON.
func BenchmarkClientGoInformerSync(b *testing.B) {
	d := startDaemon(b)
	seedBig(b, bigPods)
	want := len(kubectlSet(b, "pods", "-A"))
	viaFleet := fleetConfig(b, d.bin, d.url, "fleet")
	viaFleetJSON := rest.CopyConfig(viaFleet)
	viaFleetJSON.ContentType, viaFleetJSON.AcceptContentTypes = "application/json", "application/json"
	var direct []*rest.Config
	for _, c := range fleet.Clusters {
		cfg := c.ReaderConfig()
		cfg.QPS, cfg.Burst = -1, 0
		direct = append(direct, cfg)
	}
	waitFor(b, 120*time.Second, "daemon caught up", func() (bool, string) {
		_, n := syncPods(b, viaFleet)
		return n == want, "informer through fleetcache holds a different count than kubectl"
	})
	var fc, fcJSON, dir time.Duration
	for range b.N {
		t, n := syncPods(b, viaFleet)
		fc += t
		tj, nj := syncPods(b, viaFleetJSON)
		fcJSON += tj
		td, nd := syncPods(b, direct...)
		dir += td
		if n != want || nj != want || nd != want {
			b.Fatalf("synced %d (protobuf) / %d (JSON) pods through fleetcache, %d directly; kubectl lists %d", n, nj, nd, want)
		}
	}
	per := func(d time.Duration) float64 { return d.Seconds() / float64(b.N) }
	b.ReportMetric(float64(want), "pods")
	b.ReportMetric(per(fc), "fleetcache-s")
	b.ReportMetric(per(fcJSON), "fleetcache-json-s")
	b.ReportMetric(per(dir), "direct-3-informers-s")
	b.ReportMetric(dir.Seconds()/fc.Seconds(), "speedup")
	b.ReportMetric(fcJSON.Seconds()/fc.Seconds(), "protobuf-speedup")
}
