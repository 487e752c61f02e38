package e2e

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

// BenchmarkFleetQueryVsKubectl answers fleet questions two ways in the same run: through
// fleetcache's HTTP API (objects decoded and encoded as JSON, all pages), and with
// kubectl run once per context, the contexts in parallel (the hand-rolled loop fleetcache
// replaces, as people write it). It reports the
// time per answer for each and their ratio.
func BenchmarkFleetQueryVsKubectl(b *testing.B) {
	d := startDaemon(b)
	cases := []struct {
		name    string
		api     func() int
		kubectl func() int
	}{
		{"every-pod",
			func() int { return len(apiSet(b, d, url.Values{"resource": {"pods"}, "limit": {"5000"}})) },
			func() int { return len(kubectlSetParallel(b, "pods", "-A")) }},
		{"pods-with-label",
			func() int {
				return len(apiSet(b, d, url.Values{"resource": {"pods"}, "labelSelector": {"app=api"}, "limit": {"5000"}}))
			},
			func() int { return len(kubectlSetParallel(b, "pods", "-A", "-l", "app=api")) }},
		{"pods-per-namespace",
			func() int {
				var res struct{ Total int }
				if code := d.getJSON(b, "/api/v1/count", url.Values{"resource": {"pods"}, "groupBy": {"cluster,namespace"}}, &res); code != http.StatusOK {
					b.Fatalf("count: %d", code)
				}
				return res.Total
			},
			// kubectl cannot count: it lists and the caller counts.
			func() int { return len(kubectlSetParallel(b, "pods", "-A")) }},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			var api, kctl time.Duration
			var apiN, kubectlN int
			for range b.N {
				start := time.Now()
				apiN = tc.api()
				api += time.Since(start)
				start = time.Now()
				kubectlN = tc.kubectl()
				kctl += time.Since(start)
			}
			if apiN != kubectlN {
				b.Fatalf("answers differ: fleetcache %d, kubectl %d", apiN, kubectlN)
			}
			b.ReportMetric(float64(api.Microseconds())/float64(b.N)/1000, "fleetcache-ms")
			b.ReportMetric(float64(kctl.Microseconds())/float64(b.N)/1000, "kubectl-ms")
			b.ReportMetric(float64(kctl)/float64(api), "speedup")
			b.ReportMetric(float64(apiN), "objects")
		})
	}
}
