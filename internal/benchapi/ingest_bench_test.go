package benchapi_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/benchapi"
	"github.com/fleetcache/fleetcache/internal/fixtures"
)

func protobufConfig(s *benchapi.Server) *rest.Config {
	cfg := s.Config()
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	return cfg
}

// countdown closes done after n calls.
type countdown struct {
	left atomic.Int64
	done chan struct{}
}

func newCountdown(n int) *countdown {
	c := &countdown{done: make(chan struct{})}
	c.left.Store(int64(n))
	return c
}

func (c *countdown) tick() {
	if c.left.Add(-1) == 0 {
		close(c.done)
	}
}

// countingHandler passes events to the index and counts the adds.
type countingHandler struct {
	*aggregator.Index
	adds *countdown
}

func (h countingHandler) OnAdd(ref *clusters.InformerRef, obj *clusters.Object) {
	h.Index.OnAdd(ref, obj)
	h.adds.tick()
}

// plainInformer is the baseline: a client-go typed shared informer for pods, protobuf on
// the wire, nothing else.
func plainInformer(s *benchapi.Server, n int) time.Duration {
	cs := kubernetes.NewForConfigOrDie(protobufConfig(s))
	f := informers.NewSharedInformerFactory(cs, 0)
	inf := f.Core().V1().Pods().Informer()
	adds := newCountdown(n)
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(any) { adds.tick() }})
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	f.Start(ctx.Done())
	<-adds.done
	d := time.Since(start)
	cancel()
	f.Shutdown()
	return d
}

// fleetcachePath is fleetcache's whole ingest path: discovery, the observed list/watch,
// protobuf decoding, the compacting transform with its indexes, the informer store and
// the unified index.
func fleetcachePath(s *benchapi.Server, n int) time.Duration {
	h := countingHandler{Index: aggregator.New(nil, aggregator.Options{}), adds: newCountdown(n)}
	c := clusters.New(clusters.Target{Name: "bench", Config: s.Config(), Fingerprint: "x"}, clusters.Options{
		Resources: []clusters.ResourceSpec{{Name: "pods"}}, Handler: h,
		ProbeInterval: time.Hour, RediscoveryInterval: time.Hour,
	})
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	go func() { _ = c.Start(ctx) }()
	<-h.adds.done
	d := time.Since(start)
	cancel()
	<-c.Done()
	return d
}

// BenchmarkIngest streams the same encoded watch frames of realistic 9 KB pods to a
// plain client-go informer and to fleetcache's full path, in the same run, and reports
// events per second for each and their ratio.
func BenchmarkIngest(b *testing.B) {
	const n = 10000
	live := make([]*corev1.Pod, n)
	for i := range live {
		live[i] = fixtures.RealisticPod(i)
		live[i].Name = fmt.Sprintf("pod-%05d", i)
	}
	s, err := benchapi.New(nil, live)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var plain, fleet time.Duration
	for range b.N {
		runtime.GC()
		plain += plainInformer(s, n)
		runtime.GC()
		fleet += fleetcachePath(s, n)
	}
	b.ReportMetric(float64(n*b.N)/plain.Seconds(), "informer-events/s")
	b.ReportMetric(float64(n*b.N)/fleet.Seconds(), "fleetcache-events/s")
	b.ReportMetric(plain.Seconds()/fleet.Seconds(), "fleetcache/informer")
}

// syntheticPods are small pods (about 1 KB of JSON) for scaling runs.
func syntheticPods(n int) []*corev1.Pod {
	out := make([]*corev1.Pod, n)
	for i := range out {
		out[i] = &corev1.Pod{
			TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%03d", i%200), Name: fmt.Sprintf("pod-%07d", i), UID: types.UID(fmt.Sprintf("uid-%07d", i)),
				Labels: map[string]string{"app": fmt.Sprintf("app-%03d", i%500), "tier": "web", "team": fmt.Sprintf("team-%02d", i%20)}},
			Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%04d", i%1000), Containers: []corev1.Container{{Name: "main", Image: fmt.Sprintf("registry.example.com/app-%03d:1.0", i%500),
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)},
		}
	}
	return out
}

// BenchmarkScaling syncs 10k, 100k and 500k synthetic pods from a watch-list stream
// through fleetcache's full path and reports the initial sync time and the heap retained
// per object (cache and index together).
func BenchmarkScaling(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 500_000} {
		b.Run(fmt.Sprintf("objects=%d", n), func(b *testing.B) {
			s, err := benchapi.New(syntheticPods(n), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			for range b.N {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				h := countingHandler{Index: aggregator.New(nil, aggregator.Options{}), adds: newCountdown(n)}
				c := clusters.New(clusters.Target{Name: "bench", Config: s.Config(), Fingerprint: "x"}, clusters.Options{
					Resources: []clusters.ResourceSpec{{Name: "pods"}}, Handler: h, ProbeInterval: time.Hour, RediscoveryInterval: time.Hour,
					ListTimeout: time.Hour,
				})
				ctx, cancel := context.WithCancel(context.Background())
				start := time.Now()
				go func() { _ = c.Start(ctx) }()
				<-h.adds.done
				sync := time.Since(start)
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(sync.Seconds(), "sync-s")
				b.ReportMetric(float64(n)/sync.Seconds(), "objects/s")
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "heap-B/obj")
				runtime.KeepAlive(h)
				cancel()
				<-c.Done()
			}
		})
	}
}
