package clusters

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// fleetPod is a pod of one of apps ReplicaSets, varied as pods of a real fleet are: the
// pods of one app differ in name, UID, node, IPs and phase only.
func fleetPod(i, apps int) *corev1.Pod {
	p := realisticPod(i)
	app := i % apps
	rs := fmt.Sprintf("app%03d-%08x", app, app*7919)
	p.Name = fmt.Sprintf("%s-%05x", rs, i)
	p.Namespace = fmt.Sprintf("team-%d", app%7)
	p.Labels["app"] = fmt.Sprintf("app%03d", app)
	p.Labels["pod-template-hash"] = fmt.Sprintf("%08x", app*7919)
	p.OwnerReferences[0].Name, p.OwnerReferences[0].UID = rs, types.UID(fmt.Sprintf("rs-%d", app))
	p.Spec.Containers[0].Image = fmt.Sprintf("registry.example.com/shop/app%03d:1.%d.0", app, app%5)
	if i%9 == 0 {
		p.Status.Phase = corev1.PodPending
	}
	return p
}

func podCompactor(t testing.TB) *Compactor {
	c, err := NewCompactor(podGVK, "pods")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCompressedRoundTrip stores varied objects of three kinds and checks every one
// decodes to what was stored, before and after its resource's dictionary was trained,
// and that the dictionary makes later bodies several times smaller.
func TestCompressedRoundTrip(t *testing.T) {
	t.Run("pods", func(t *testing.T) {
		c := podCompactor(t)
		var plain, compressed, plainBytes, compressedBytes int
		for i := range 600 {
			in := fleetPod(i, 40)
			want := in.DeepCopy()
			want.ManagedFields = nil
			wantRaw, _ := want.Marshal()
			o, err := c.Compact(in)
			if err != nil {
				t.Fatal(err)
			}
			back, err := o.Decode()
			if err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(back, want) {
				t.Fatalf("pod %d decodes to something else", i)
			}
			if !bytes.Equal(o.Raw(), wantRaw) {
				t.Fatalf("pod %d: Raw is not the protobuf stored", i)
			}
			raw, _, gvk, ok, err := o.Protobuf(make([]byte, 0, 10))
			if err != nil || !ok || gvk != podGVK || !bytes.Equal(raw, wantRaw) {
				t.Fatalf("pod %d: Protobuf: %v %v %v", i, ok, gvk, err)
			}
			n, comp := o.StoredSize()
			if comp {
				compressed++
				compressedBytes += n
			} else {
				plain++
				plainBytes += n
			}
		}
		if plain != trainAfter {
			t.Errorf("%d pods stored plainly, want the first %d", plain, trainAfter)
		}
		if compressed == 0 || compressedBytes/compressed*8 > plainBytes/plain {
			t.Errorf("compressed bodies average %d bytes against %d plain, want 8x smaller at least", compressedBytes/max(compressed, 1), plainBytes/plain)
		}
	})
	t.Run("configmaps", func(t *testing.T) {
		c, err := NewCompactor(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, "configmaps")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 300 {
			in := realisticConfigMap(i)
			in.Data["n"] = fmt.Sprint(i * i)
			want := in.DeepCopy()
			want.ManagedFields = nil
			o, err := c.Compact(in)
			if err != nil {
				t.Fatal(err)
			}
			back, err := o.Decode()
			if err != nil || !equality.Semantic.DeepEqual(back, want) {
				t.Fatalf("configmap %d: %v", i, err)
			}
		}
	})
	t.Run("custom resources as JSON", func(t *testing.T) {
		c, err := NewCompactor(schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Widget"}, "widgets.example.com")
		if err != nil {
			t.Fatal(err)
		}
		last := false
		for i := range 400 {
			in := realisticWidget(i)
			unstructured.RemoveNestedField(in.Object, "metadata", "managedFields")
			want := in.DeepCopy()
			o, err := c.Compact(in)
			if err != nil {
				t.Fatal(err)
			}
			back, err := o.Decode()
			if err != nil || !equality.Semantic.DeepEqual(back, want) {
				t.Fatalf("widget %d: %v\n%v\n%v", i, err, back, want)
			}
			_, last = o.StoredSize()
			if _, _, _, ok, _ := o.Protobuf(nil); ok {
				t.Fatal("a custom resource claims protobuf")
			}
		}
		if !last {
			t.Error("widgets are not compressed after 400")
		}
	})
}

func TestDictionaryTraining(t *testing.T) {
	t.Run("too few objects", func(t *testing.T) {
		c := podCompactor(t)
		for i := range trainAfter - 1 {
			o, _ := c.Compact(fleetPod(i, 3))
			if _, comp := o.StoredSize(); comp {
				t.Fatalf("object %d compressed before training", i)
			}
		}
		if c.codec.trainer.current() != nil {
			t.Error("dictionary trained before trainAfter objects")
		}
	})
	t.Run("too few bytes", func(t *testing.T) {
		c, _ := NewCompactor(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, "configmaps")
		tiny := func(i int) *corev1.ConfigMap {
			return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint(i), Namespace: "a"}}
		}
		for i := range 2 * trainAfter {
			if _, err := c.Compact(tiny(i)); err != nil {
				t.Fatal(err)
			}
		}
		if c.codec.trainer.current() != nil {
			t.Errorf("trained on %d bytes of samples, want at least %d", c.codec.trainer.bytes, trainMinBytes)
		}
		// Once the bytes are there, it trains.
		for i := 0; c.codec.trainer.current() == nil && i < 10_000; i++ {
			cm := tiny(i)
			cm.Data = map[string]string{"config": fmt.Sprintf("%0500d", i)}
			if _, err := c.Compact(cm); err != nil {
				t.Fatal(err)
			}
		}
		if c.codec.trainer.current() == nil {
			t.Error("never trained")
		}
	})
	t.Run("incompressible objects stay plain", func(t *testing.T) {
		c, _ := NewCompactor(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, "configmaps")
		for i := range 3 * trainAfter {
			b := make([]byte, 1024)
			_, _ = rand.Read(b)
			cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint(i), Namespace: "a"}, BinaryData: map[string][]byte{"k": b}}
			want := cm.DeepCopy()
			o, err := c.Compact(cm)
			if err != nil {
				t.Fatal(err)
			}
			if _, comp := o.StoredSize(); comp {
				t.Fatalf("random object %d stored compressed", i)
			}
			if back, err := o.Decode(); err != nil || !equality.Semantic.DeepEqual(back, want) {
				t.Fatalf("object %d: %v", i, err)
			}
		}
		if !c.codec.trainer.done || c.codec.trainer.current() != nil {
			t.Error("a dictionary was kept for random data")
		}
	})
	t.Run("train errors", func(t *testing.T) {
		if _, err := train(nil); !errors.Is(err, errNotUseful) {
			t.Errorf("no samples: %v", err)
		}
		same := make([]sample, 8)
		for i := range same {
			same[i] = sample{body: bytes.Repeat([]byte("abcdefgh"), 100), labels: "a\x01b"}
		}
		d, err := train(same)
		if err != nil {
			t.Fatalf("identical samples: %v", err)
		}
		if !d.raw {
			t.Error("identical samples: want the content-only dictionary BuildDict's refusal leads to")
		}
		out, err := d.compress(same[0].body)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := d.decompress(nil, out); err != nil || !bytes.Equal(back, same[0].body) {
			t.Errorf("round trip: %v", err)
		}
		if _, err := d.decompress(nil, []byte("not zstd")); err == nil {
			t.Error("garbage decompressed")
		}
	})
}

// TestConcurrentDecoding reads shared objects from many goroutines while the same
// resource keeps storing new ones (its dictionary is trained meanwhile): run with -race.
func TestConcurrentDecoding(t *testing.T) {
	c := podCompactor(t)
	var mu sync.Mutex
	var objs []*Object
	var wants [][]byte
	add := func(i int) {
		in := fleetPod(i, 20)
		o, err := c.Compact(in)
		if err != nil {
			t.Error(err)
			return
		}
		raw := o.Raw()
		mu.Lock()
		objs, wants = append(objs, o), append(wants, raw)
		mu.Unlock()
	}
	for i := range 50 {
		add(i)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		defer close(stop)
		for i := 50; i < 400; i++ {
			add(i)
		}
	})
	for g := range 4 {
		wg.Go(func() {
			buf := make([]byte, 0, 1024)
			for n := 0; ; n++ {
				select {
				case <-stop:
					if n > 0 {
						return
					}
				default:
				}
				mu.Lock()
				k := (n*7 + g) % len(objs)
				o, want := objs[k], wants[k]
				mu.Unlock()
				raw, _, _, _, err := o.Protobuf(buf)
				if err != nil || !bytes.Equal(raw, want) {
					t.Errorf("object %d: Protobuf differs (%v)", k, err)
					return
				}
				if _, comp := o.StoredSize(); comp {
					buf = raw[:0]
				}
				back, err := o.Decode()
				if err != nil {
					t.Error(err)
					return
				}
				got, _ := back.(*corev1.Pod).Marshal()
				if !bytes.Equal(got, want) {
					t.Errorf("object %d: Decode differs", k)
					return
				}
			}
		})
	}
	wg.Wait()
	if c.codec.trainer.current() == nil {
		t.Error("no dictionary was trained: the test did not decode compressed objects")
	}
}

func TestObjectsAlikeShareMetadata(t *testing.T) {
	c := podCompactor(t)
	a, _ := c.Compact(fleetPod(0, 10))
	b, _ := c.Compact(fleetPod(10, 10)) // same app: same namespace, labels, owner
	other, _ := c.Compact(fleetPod(1, 10))
	if reflect.ValueOf(a.Labels).UnsafePointer() != reflect.ValueOf(b.Labels).UnsafePointer() {
		t.Error("pods of one ReplicaSet hold two label maps")
	}
	if &a.OwnerReferences[0] != &b.OwnerReferences[0] {
		t.Error("pods of one ReplicaSet hold two owner lists")
	}
	if reflect.ValueOf(a.Labels).UnsafePointer() == reflect.ValueOf(other.Labels).UnsafePointer() || other.Labels["app"] != "app001" {
		t.Error("pods of different apps share labels")
	}
	if a.FlatLabels() != b.FlatLabels() || a.FlatLabels() == other.FlatLabels() {
		t.Error("flattened label sets are not shared by exactly the pods alike")
	}
	if f, _ := a.Field("images"); f != "registry.example.com/shop/app000:1.0.0" {
		t.Errorf("images field %q", f)
	}
	// Owners differing only in Controller are different shapes.
	p := fleetPod(20, 10)
	p.OwnerReferences[0].Controller = ptr.To(false)
	d, _ := c.Compact(p)
	if &d.OwnerReferences[0] == &a.OwnerReferences[0] || *d.OwnerReferences[0].Controller {
		t.Error("an owner reference with another controller flag shares the shape")
	}
	// A decoded copy is the caller's: changing it leaves the shared labels alone.
	back, _ := a.Decode()
	back.(*corev1.Pod).Labels["app"] = "changed"
	cp := a.DeepCopyObject().(*Object)
	cp.Labels["app"] = "changed too"
	if b.Labels["app"] != "app000" {
		t.Error("a copy's labels are the shared map")
	}
}

func TestUnusedShapesAreForgotten(t *testing.T) {
	c := podCompactor(t)
	o, _ := c.Compact(fleetPod(123_456, 1_000_000))
	key := string(append([]byte(o.Namespace+"\x00"), o.FlatLabels().Value()...))
	count := func() int {
		shapes.Lock()
		defer shapes.Unlock()
		n := 0
		for k := range shapes.m {
			if len(k) >= len(key) && k[:len(key)] == key {
				n++
			}
		}
		return n
	}
	if count() != 1 {
		t.Fatalf("shape not in the table")
	}
	runtime.KeepAlive(o)
	o = nil
	testfleet.Eventually(t, 10*time.Second, "the shape of a collected object leaves the table", func() (bool, string) {
		runtime.GC()
		n := count()
		return n == 0, fmt.Sprint(n, " entries")
	})
}

func TestInternIsBounded(t *testing.T) {
	a := intern(fmt.Sprint("node-", 1))
	if b := intern(fmt.Sprint("node-", 1)); b != a || unsafe.StringData(b) != unsafe.StringData(a) {
		t.Fatal("intern returned another value")
	}
	for i := range internMax + 10 {
		intern(fmt.Sprint("value-", i))
	}
	strs.Lock()
	n := len(strs.m)
	strs.Unlock()
	if n > internMax {
		t.Errorf("intern table holds %d strings, bound %d", n, internMax)
	}
	if a != "node-1" {
		t.Error("an interned string changed when the table was emptied")
	}
}
