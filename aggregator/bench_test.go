package aggregator

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"

	"github.com/fleetcache/fleetcache/clusters"
)

// synthetic builds an index of n pods spread over 10 clusters, 50 namespaces each, with
// an "app" label of 200 values (a selective selector matches 1/200 of the fleet) and a
// "tier" label of 3 values (a broad one matches a third). Built once per size.
var synthetic = struct {
	sync.Mutex
	byN map[int]*Index
}{byN: map[int]*Index{}}

func syntheticIndex(b *testing.B, n int) *Index {
	synthetic.Lock()
	defer synthetic.Unlock()
	if ix := synthetic.byN[n]; ix != nil {
		return ix
	}
	for k := range synthetic.byN { // keep one size in memory at a time
		delete(synthetic.byN, k)
	}
	runtime.GC()
	c, err := clusters.NewCompactor(corev1.SchemeGroupVersion.WithKind("Pod"), "pods")
	if err != nil {
		b.Fatal(err)
	}
	ix := New(nil, Options{HistorySize: 16})
	refs := make([]*clusters.InformerRef, 10)
	for i := range refs {
		refs[i] = podRef(fmt.Sprintf("cluster-%02d", i), uint64(i+1))
	}
	for i := range n {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: fmt.Sprintf("ns-%02d", i%50), Name: fmt.Sprintf("pod-%07d", i), UID: types.UID(fmt.Sprint(i)), ResourceVersion: fmt.Sprint(i + 1),
				Labels: map[string]string{"app": fmt.Sprintf("app-%03d", i%200), "tier": []string{"web", "api", "db"}[i%3]},
			},
			Spec:   corev1.PodSpec{NodeName: fmt.Sprintf("node-%03d", i%300), Containers: []corev1.Container{{Name: "main", Image: fmt.Sprintf("registry.example.com/app-%03d:1.0", i%200)}}},
			Status: corev1.PodStatus{Phase: []corev1.PodPhase{"Running", "Running", "Running", "Pending"}[i%4]},
		}
		o, err := c.Compact(p)
		if err != nil {
			b.Fatal(err)
		}
		ix.OnAdd(refs[(i/7)%10], o)
	}
	synthetic.byN[n] = ix
	return ix
}

var sizes = []int{100_000, 1_000_000}

func BenchmarkGet(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("objects=%d", n), func(b *testing.B) {
			ix := syntheticIndex(b, n)
			type key struct{ cluster, ns, name string }
			keys := make([]key, 4096)
			for i := range keys {
				k := (i * 7919) % n
				keys[i] = key{fmt.Sprintf("cluster-%02d", (k/7)%10), fmt.Sprintf("ns-%02d", k%50), fmt.Sprintf("pod-%07d", k)}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				k := keys[i%len(keys)]
				if _, err := ix.Get(k.cluster, "pods", k.ns, k.name); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkList(b *testing.B) {
	for _, n := range sizes {
		for _, tc := range []struct {
			name string
			q    Query
		}{
			{"selective-label", Query{Resource: "pods", LabelSelector: mustLabels(b, "app=app-042")}},
			{"selective-label-page500", Query{Resource: "pods", LabelSelector: mustLabels(b, "app=app-042"), Limit: 500}},
			{"broad-label-page500", Query{Resource: "pods", LabelSelector: mustLabels(b, "tier=web"), Limit: 500}},
			{"indexed-field-page500", Query{Resource: "pods", FieldSelector: fields.OneTermEqualSelector("spec.nodeName", "node-007"), Limit: 500}},
		} {
			b.Run(fmt.Sprintf("objects=%d/%s", n, tc.name), func(b *testing.B) {
				ix := syntheticIndex(b, n)
				b.ReportAllocs()
				b.ResetTimer()
				var items int
				for range b.N {
					res, err := ix.List(context.Background(), tc.q)
					if err != nil {
						b.Fatal(err)
					}
					items = len(res.Items)
				}
				b.ReportMetric(float64(items), "items")
			})
		}
	}
}

func BenchmarkCount(b *testing.B) {
	for _, n := range sizes {
		for _, tc := range []struct {
			name    string
			q       Query
			groupBy []string
		}{
			{"by-cluster-namespace", Query{Resource: "pods"}, []string{"cluster", "namespace"}},
			{"by-cluster-namespace-broad-selector", Query{Resource: "pods", LabelSelector: mustLabels(b, "tier!=db")}, []string{"cluster", "namespace"}},
			{"by-label-app", Query{Resource: "pods"}, []string{"label:app"}},
		} {
			b.Run(fmt.Sprintf("objects=%d/%s", n, tc.name), func(b *testing.B) {
				ix := syntheticIndex(b, n)
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					res, err := ix.Count(context.Background(), tc.q, tc.groupBy)
					if err != nil {
						b.Fatal(err)
					}
					if res.Total == 0 {
						b.Fatal("nothing counted")
					}
				}
			})
		}
	}
}
