package server

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
)

type noFleet struct{}

func (noFleet) Status() []clusters.ClusterStatus { return nil }
func (noFleet) Readiness() []clusters.Readiness  { return nil }
func (noFleet) Loaded() bool                     { return true }
func (noFleet) LoadError() error                 { return nil }

func loadIndex(b *testing.B, n int) *aggregator.Index {
	c, err := clusters.NewCompactor(corev1.SchemeGroupVersion.WithKind("Pod"), "pods")
	if err != nil {
		b.Fatal(err)
	}
	ix := aggregator.New(nil, aggregator.Options{})
	for i := range n {
		cluster := fmt.Sprintf("cluster-%02d", i%10)
		ref := &clusters.InformerRef{Cluster: cluster, Resource: "pods", Kind: "Pod", APIVersion: "v1", Namespaced: true, Names: []string{"pods"}, ID: uint64(i%10 + 1)}
		o, err := c.Compact(&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%02d", i%50), Name: fmt.Sprintf("pod-%07d", i), UID: types.UID(fmt.Sprint(i)), ResourceVersion: fmt.Sprint(i + 1),
				Labels: map[string]string{"app": fmt.Sprintf("app-%03d", i%200)}},
			Spec:   corev1.PodSpec{NodeName: fmt.Sprintf("node-%03d", i%300), Containers: []corev1.Container{{Name: "main", Image: "img:1"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning},
		})
		if err != nil {
			b.Fatal(err)
		}
		ix.OnAdd(ref, o)
	}
	return ix
}

// BenchmarkHTTPUnderLoad runs a bounded load generator (8 concurrent clients on
// loopback, each waiting for its answer before the next request) against the HTTP API
// over 100k pods in 10 clusters, and reports p50 and p99 latency per request type.
func BenchmarkHTTPUnderLoad(b *testing.B) {
	ix := loadIndex(b, 100_000)
	srv := httptest.NewServer(New(Options{Fleet: noFleet{}, Index: ix}))
	defer srv.Close()
	requests := map[string]string{
		"list-selective-page100":  "/api/v1/objects?resource=pods&labelSelector=app%3Dapp-042&limit=100",
		"count-cluster-namespace": "/api/v1/count?resource=pods&groupBy=cluster,namespace",
		"get-one":                 "/api/v1/objects/cluster-03/pods/ns-03/pod-0000003",
	}
	const clients = 8
	for name, path := range requests {
		b.Run(name, func(b *testing.B) {
			var mu sync.Mutex
			var lat []time.Duration
			var wg sync.WaitGroup
			per := max(b.N/clients, 50)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
			b.ResetTimer()
			for range clients {
				wg.Go(func() {
					mine := make([]time.Duration, 0, per)
					for range per {
						start := time.Now()
						resp, err := client.Get(srv.URL + path)
						if err != nil {
							b.Error(err)
							return
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							b.Errorf("%s: %s", path, resp.Status)
							return
						}
						mine = append(mine, time.Since(start))
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				})
			}
			wg.Wait()
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "req/s")
		})
	}
}
