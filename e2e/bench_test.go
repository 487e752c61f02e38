package e2e

import (
	"net/url"
	"testing"
	"time"
)

// BenchmarkFleetQueryVsKubectl answers "every pod of the fleet" two ways in the same run:
// through fleetcache's HTTP API (all pages, objects decoded and encoded as JSON), and with
// kubectl run once per context (the hand-rolled loop fleetcache replaces). It reports both
// times per answer and their ratio.
func BenchmarkFleetQueryVsKubectl(b *testing.B) {
	d := startDaemon(b)
	var api, kctl time.Duration
	var apiN, kubectlN int
	for range b.N {
		start := time.Now()
		apiN = len(apiSet(b, d, url.Values{"resource": {"pods"}, "limit": {"500"}}))
		api += time.Since(start)

		start = time.Now()
		kubectlN = len(kubectlSet(b, "pods", "-A"))
		kctl += time.Since(start)
	}
	if apiN != kubectlN {
		b.Fatalf("answers differ: fleetcache %d pods, kubectl %d", apiN, kubectlN)
	}
	b.ReportMetric(float64(api.Microseconds())/float64(b.N)/1000, "fleetcache-ms/answer")
	b.ReportMetric(float64(kctl.Microseconds())/float64(b.N)/1000, "kubectl-ms/answer")
	b.ReportMetric(float64(kctl)/float64(api), "speedup")
	b.ReportMetric(float64(apiN), "pods")
}
