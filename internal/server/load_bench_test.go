package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/fixtures"
	"github.com/fleetcache/fleetcache/internal/kubeapi"
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

// BenchmarkMixedLoad: 32 clients, each on its own connection, each asking one kind of
// question again and again for a fixed time: counts, single gets, selective lists (a
// label that 1/200 of the pods carry, pages of 100), pages of 500 whole objects, and
// kubectl's Tables (kubectl asks for pages of 500 rows; a Table is answered whole), over 30,000 realistic pods in 10 clusters, while
// 200 watch streams are open and 50 pods change every second. It reports p50 and p99
// latency and errors per kind, with the list admission of fairness.go ("fair") and
// without it ("flat", every request runs at once: the flat in-flight cap alone), in the
// same run.
func BenchmarkMixedLoad(b *testing.B) {
	ix := servingIndex(b, 30_000, true)
	kinds := []struct {
		name, path, accept string
		pages              bool
	}{
		{"count", "/api/v1/count?resource=pods&groupBy=cluster,namespace", "", false},
		{"get", "/api/v1/objects/cluster-03/pods/ns-03/checkout-api-7d9f8b6c5d-00003", "", false},
		{"selective-list", "/api/v1/objects?resource=pods&labelSelector=app%3Dapp-042&limit=100", "", true},
		{"page-500", "/api/v1/objects?resource=pods&limit=500", "", true},
		{"kubectl-table", "/fleet/api/v1/pods?limit=500", tableAccept, true},
	}
	for _, mode := range []struct {
		name  string
		seats int
	}{{"fair", 0}, {"flat", -1}} {
		b.Run(mode.name, func(b *testing.B) {
			srv := httptest.NewServer(New(Options{Fleet: newSyncedFleet(), Index: ix, KubeAPI: &kubeapi.Handler{Index: ix, Fleet: newSyncedFleet()},
				Limits: Limits{ListSeats: mode.seats}}))
			defer srv.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// 200 watch streams, read to the end.
			var streams sync.WaitGroup
			for range 200 {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/v1/watch?resource=pods", nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil || resp.StatusCode != http.StatusOK {
					b.Fatalf("watch: %v %v", err, resp)
				}
				streams.Go(func() { _, _ = io.Copy(io.Discard, resp.Body); resp.Body.Close() })
			}
			// 50 changes a second.
			streams.Go(func() { churn(ctx, b, ix, 50) })
			const clients, duration = 32, 10 * time.Second
			type result struct {
				lat    []time.Duration
				errors int
			}
			results := make([]result, clients)
			var wg sync.WaitGroup
			b.ResetTimer()
			for c := range clients {
				k := kinds[c%len(kinds)]
				wg.Go(func() {
					client := &http.Client{Transport: &http.Transport{}}
					defer client.CloseIdleConnections()
					var body ends // the load generator shares the cores: it keeps only the ends
					copyBuf := make([]byte, 32<<10)
					deadline := time.Now().Add(duration)
					path := k.path
					for time.Now().Before(deadline) {
						req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
						if k.accept != "" {
							req.Header.Set("Accept", k.accept)
						}
						start := time.Now()
						resp, err := client.Do(req)
						if err != nil {
							results[c].errors++
							continue
						}
						body.reset()
						_, _ = io.CopyBuffer(&body, resp.Body, copyBuf)
						resp.Body.Close()
						results[c].lat = append(results[c].lat, time.Since(start))
						if resp.StatusCode != http.StatusOK {
							results[c].errors++
							continue
						}
						path = k.path
						if k.pages {
							if cont := continueIn(body.bytes()); cont != "" {
								path = k.path + "&continue=" + url.QueryEscape(cont)
							}
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			cancel()
			srv.CloseClientConnections()
			streams.Wait()
			for i, k := range kinds {
				var lat []time.Duration
				errs := 0
				for c := i; c < clients; c += len(kinds) {
					lat = append(lat, results[c].lat...)
					errs += results[c].errors
				}
				sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
				if len(lat) == 0 {
					b.Fatalf("%s: no answers", k.name)
				}
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, k.name+"-p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, k.name+"-p99-ms")
				b.ReportMetric(float64(len(lat))/duration.Seconds(), k.name+"-req/s")
				b.ReportMetric(float64(errs), k.name+"-errors")
			}
		})
	}
}

// ends keeps what it is written first (512 bytes) and last (1 KiB), where a page's
// continue token is.
type ends struct {
	head, tail []byte
}

func (e *ends) reset() { e.head, e.tail = e.head[:0], e.tail[:0] }

func (e *ends) Write(p []byte) (int, error) {
	if n := min(len(p), 512-len(e.head)); n > 0 {
		e.head = append(e.head, p[:n]...)
	}
	e.tail = append(e.tail, p[max(0, len(p)-1024):]...)
	if len(e.tail) > 1024 {
		e.tail = append(e.tail[:0], e.tail[len(e.tail)-1024:]...)
	}
	return len(p), nil
}

func (e *ends) bytes() []byte { return append(append([]byte(nil), e.head...), e.tail...) }

// continueIn finds a list's continue token without parsing the page: a Table has it at
// its start (metadata), an ObjectList at its end.
func continueIn(body []byte) string {
	const key = `"continue":"`
	i := bytes.Index(body[:min(len(body), 512)], []byte(key))
	if i < 0 {
		if i = bytes.LastIndex(body[max(0, len(body)-1024):], []byte(key)); i < 0 {
			return ""
		}
		i += max(0, len(body)-1024)
	}
	rest := body[i+len(key):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return ""
	}
	return string(rest[:end])
}

// churn updates perSecond pods a second (a label flips) until ctx ends.
func churn(ctx context.Context, b *testing.B, ix *aggregator.Index, perSecond int) {
	c, err := clusters.NewCompactor(corev1.SchemeGroupVersion.WithKind("Pod"), "pods")
	if err != nil {
		b.Error(err)
		return
	}
	t := time.NewTicker(time.Second / time.Duration(perSecond))
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p := fixtures.RealisticPod(i % 30_000)
		p.Namespace = fmt.Sprintf("ns-%02d", i%30_000%50)
		p.Labels["app"] = fmt.Sprintf("app-%03d", i%30_000%200)
		p.Labels["rev"] = fmt.Sprint(i)
		o, err := c.Compact(p)
		if err != nil {
			b.Error(err)
			return
		}
		ref := &clusters.InformerRef{Cluster: fmt.Sprintf("cluster-%02d", i%30_000%10), Resource: "pods", Kind: "Pod", APIVersion: "v1", Namespaced: true, Names: []string{"pods"}, ID: uint64(i%30_000%10 + 1)}
		ix.OnUpdate(ref, nil, o)
	}
}
