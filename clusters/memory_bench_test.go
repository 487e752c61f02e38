package clusters

import (
	"encoding/json"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	runtimepkg "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"
)

// BenchmarkRetainedBytes measures the heap an informer store retains per object, for the
// same objects held three ways in the same run:
//
//   - typed:     a plain client-go typed informer (protobuf decoded into typed structs,
//     kept whole);
//   - dynamic:   a dynamic informer (JSON decoded into unstructured maps, kept whole);
//   - fleetcache: fleetcache's path (typed or unstructured decode, then the compact
//     transform).
//
// Reported as B/obj for each and fleetcache's ratio against the typed informer (for custom
// resources, against the dynamic one, the only other way to hold them).
func BenchmarkRetainedBytes(b *testing.B) {
	const n = 2000
	b.Run("pod", func(b *testing.B) {
		benchRetained(b, n, podGVK, func(i int) protoObject { return realisticPod(i) }, func() protoObject { return &corev1.Pod{} })
	})
	b.Run("configmap", func(b *testing.B) {
		gvk := schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
		benchRetained(b, n, gvk, func(i int) protoObject { return realisticConfigMap(i) }, func() protoObject { return &corev1.ConfigMap{} })
	})
	b.Run("custom-resource", func(b *testing.B) {
		gvk := schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Widget"}
		frames := make([][]byte, n)
		for i := range frames {
			frames[i], _ = realisticWidget(i).MarshalJSON()
		}
		c := &codec{gvk: gvk}
		for range b.N {
			dyn := retained(func() any { return storeOf(frames, decodeUnstructured) })
			fc := retained(func() any {
				return storeOf(frames, func(raw []byte) any { o, _ := c.compact(decodeUnstructured(raw)); return o })
			})
			b.ReportMetric(float64(dyn)/n, "dynamic-B/obj")
			b.ReportMetric(float64(fc)/n, "fleetcache-B/obj")
			b.ReportMetric(float64(fc)/float64(dyn), "fleetcache/dynamic")
		}
	})
}

func benchRetained(b *testing.B, n int, gvk schema.GroupVersionKind, newObj func(int) protoObject, empty func() protoObject) {
	protoFrames := make([][]byte, n)
	jsonFrames := make([][]byte, n)
	for i := range n {
		obj := newObj(i)
		protoFrames[i], _ = obj.Marshal()
		jsonFrames[i], _ = json.Marshal(obj)
	}
	decodeTyped := func(raw []byte) any {
		obj := empty()
		if err := obj.Unmarshal(raw); err != nil {
			b.Fatal(err)
		}
		return obj
	}
	c := &codec{gvk: gvk, newTyped: empty}
	for range b.N {
		typed := retained(func() any { return storeOf(protoFrames, decodeTyped) })
		dyn := retained(func() any { return storeOf(jsonFrames, decodeUnstructured) })
		fc := retained(func() any {
			return storeOf(protoFrames, func(raw []byte) any { o, _ := c.compact(decodeTyped(raw)); return o })
		})
		b.ReportMetric(float64(typed)/float64(n), "typed-B/obj")
		b.ReportMetric(float64(dyn)/float64(n), "dynamic-B/obj")
		b.ReportMetric(float64(fc)/float64(n), "fleetcache-B/obj")
		b.ReportMetric(float64(fc)/float64(typed), "fleetcache/typed")
	}
}

func decodeUnstructured(raw []byte) any {
	obj, err := runtimepkg.Decode(unstructured.UnstructuredJSONScheme, raw)
	if err != nil {
		panic(err)
	}
	return obj
}

// storeOf fills an indexer as an informer does: keyed by namespace/name, with the
// namespace index.
func storeOf(frames [][]byte, decode func([]byte) any) cache.Indexer {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, f := range frames {
		if err := idx.Add(decode(f)); err != nil {
			panic(err)
		}
	}
	return idx
}

// retained is the heap still in use after build, with its result kept alive. It collects
// twice, as a running daemon does between bursts: pooled buffers and compression encoders
// of an idle resource are freed by the second cycle.
func retained(build func() any) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	keep := build()
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(keep)
	if after.HeapAlloc < before.HeapAlloc {
		return 0
	}
	return after.HeapAlloc - before.HeapAlloc
}
