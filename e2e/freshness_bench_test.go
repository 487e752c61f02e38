package e2e

import (
	"net/url"
	"testing"
	"time"
)

// BenchmarkFreshness compares the lag fleetcache reports with the true lag, measured end
// to end (a write straight to the apiserver until fleetcache's /api/v1/watch delivers it),
// under three conditions on the real fleet, and the load its probes put on a cluster.
//
//	steady:  5 patches/s of one field, healthy network
//	delay:   the same, with 2s added to everything the apiserver sends fleetcache
//	frozen:  the connection fleetcache's watches use stops delivering while writes go on
func BenchmarkFreshness(b *testing.B) {
	d := startProxiedDaemon(b)
	dd := &daemon{url: d.url}
	for range b.N {
		// Probe cost: requests fleetcache makes to the cluster while nothing changes.
		reqs := func() float64 {
			fams := dd.scrape(b)
			v, _ := value(fams, "fleetcache_cluster_probes_total", map[string]string{"cluster": d.victim.Name})
			for _, res := range []string{"configmaps", "pods", "namespaces"} {
				for _, m := range []string{"fleetcache_lists_total", "fleetcache_watch_starts_total"} {
					n, _ := value(fams, m, map[string]string{"cluster": d.victim.Name, "resource": res})
					v += n
				}
			}
			return v
		}
		r0, t0 := reqs(), time.Now()
		time.Sleep(20 * time.Second)
		b.ReportMetric((reqs()-r0)/time.Since(t0).Seconds(), "idle-requests/s/cluster")

		p := startPatcher(b, d.victim, 5)
		ch, stop := openWatch(b, &daemon{url: d.url}, url.Values{"resource": {"configmaps"}, "cluster": {d.victim.Name}, "fieldSelector": {"metadata.name=" + p.name}})
		measure := func(name string, window time.Duration) {
			time.Sleep(3 * time.Second) // earlier probes resolved, channel drained below
			for len(ch) > 0 {
				<-ch
			}
			sum0, n0 := syncLag(b, dd, d.victim.Name)
			from, end := time.Now(), time.Now().Add(window)
			var total float64
			var n int
			for time.Now().Before(end) {
				select {
				case l := <-ch:
					if at, ok := p.sentAt(l.Object.Metadata.Annotations["seq"]); ok && at.After(from) {
						total += time.Since(at).Seconds()
						n++
					}
				case <-time.After(time.Until(end)):
				}
			}
			sum1, n1 := syncLag(b, dd, d.victim.Name)
			if n == 0 || n1 == n0 {
				b.Fatalf("%s: %d events, %v probes resolved", name, n, n1-n0)
			}
			b.ReportMetric(total/float64(n)*1000, name+"-true-ms")
			b.ReportMetric((sum1-sum0)/(n1-n0)*1000, name+"-reported-ms")
		}
		measure("steady", 10*time.Second)
		d.proxy.SetDelay(2 * time.Second)
		measure("delay", 15*time.Second)
		d.proxy.SetDelay(0)
		time.Sleep(3 * time.Second)

		// Frozen: when the answer turns partial, and when a write made during the freeze
		// reaches the watch through fleetcache (true lag).
		frozenAt := time.Now()
		d.proxy.Freeze()
		var detected time.Duration
		var during string
		for detected == 0 || during == "" {
			if detected == 0 && d.claim(b).partial {
				detected = time.Since(frozenAt)
			}
			if during == "" && time.Since(frozenAt) > 500*time.Millisecond {
				p.mu.Lock()
				for v, at := range p.sent {
					if at.After(frozenAt.Add(200 * time.Millisecond)) {
						during = v
						break
					}
				}
				p.mu.Unlock()
			}
			if time.Since(frozenAt) > 30*time.Second {
				b.Fatalf("frozen: not detected (%s) or no write (%q)", detected, during)
			}
			time.Sleep(50 * time.Millisecond)
		}
		at, _ := p.sentAt(during)
		var caughtUp time.Duration
		deadline := time.After(60 * time.Second)
		for caughtUp == 0 {
			select {
			case l := <-ch:
				if l.Object.Metadata.Annotations["seq"] == during {
					caughtUp = time.Since(at)
				}
			case <-deadline:
				b.Fatalf("frozen: write %s never arrived", during)
			}
		}
		stop()
		p.halt()
		b.ReportMetric(detected.Seconds()*1000, "frozen-reported-stale-after-ms")
		b.ReportMetric(caughtUp.Seconds()*1000, "frozen-true-lag-ms")
		b.Logf("frozen: reported stale after %s; a write made %s into the freeze reached fleetcache's watch %s later", detected, at.Sub(frozenAt).Round(time.Millisecond), caughtUp.Round(time.Millisecond))
	}
}
