package clusters

import (
	"encoding/json"
	"fmt"

	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	podGVK    = schema.GroupVersionKind{Version: "v1", Kind: "Pod"}
	secretGVK = schema.GroupVersionKind{Version: "v1", Kind: "Secret"}
)

func typedCodec(gvk schema.GroupVersionKind, newObj func() protoObject) *codec {
	return &codec{gvk: gvk, newTyped: newObj}
}

func TestRealisticPodIsAbout9KB(t *testing.T) {
	raw, err := json.Marshal(realisticPod(1))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(raw); n < 8500 || n > 10500 {
		t.Errorf("fixture pod is %d bytes of JSON, want about 9 KB", n)
	}
}

func TestCompactRoundTripsTrimmedPod(t *testing.T) {
	c := typedCodec(podGVK, func() protoObject { return &corev1.Pod{} })
	in := realisticPod(7)
	in.Annotations[corev1.LastAppliedConfigAnnotation] = `{"big":"copy"}`
	want := in.DeepCopy()
	want.ManagedFields = nil
	delete(want.Annotations, corev1.LastAppliedConfigAnnotation)

	out, err := c.compact(in)
	if err != nil {
		t.Fatal(err)
	}
	obj := out.(*Object)
	if obj.Name != want.Name || obj.Namespace != "checkout" || obj.Labels["app"] != "checkout-api" || len(obj.OwnerReferences) != 1 {
		t.Errorf("decoded metadata incomplete: %+v", obj.ObjectMeta)
	}
	if obj.Annotations != nil || obj.ManagedFields != nil {
		t.Error("compact metadata keeps annotations or managedFields; they belong in the encoded form only")
	}
	back, err := obj.Decode()
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(back, want) {
		a, _ := json.Marshal(back)
		b, _ := json.Marshal(want)
		t.Errorf("decoded pod differs from the trimmed input:\n%s\n%s", a, b)
	}
	// Decode hands out a fresh copy: changing it leaves the cache alone.
	back.(*corev1.Pod).Labels["app"] = "changed"
	again, _ := obj.Decode()
	if again.(*corev1.Pod).Labels["app"] != "checkout-api" || obj.Labels["app"] != "checkout-api" {
		t.Error("a decoded copy shares state with the cache")
	}
}

func TestCompactDropsSecretValues(t *testing.T) {
	c := typedCodec(secretGVK, func() protoObject { return &corev1.Secret{} })
	in := &corev1.Secret{Data: map[string][]byte{"password": []byte("hunter2")}, StringData: map[string]string{"token": "abc"}}
	in.Name, in.Namespace = "db", "default"
	out, err := c.compact(in)
	if err != nil {
		t.Fatal(err)
	}
	back, _ := out.(*Object).Decode()
	s := back.(*corev1.Secret)
	if v, ok := s.Data["password"]; !ok || len(v) != 0 {
		t.Errorf("want the key kept with no value, got %q (present %v)", v, ok)
	}
	if s.StringData != nil {
		t.Errorf("stringData kept: %v", s.StringData)
	}

	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Secret",
		"metadata":   map[string]any{"name": "db", "namespace": "default"},
		"data":       map[string]any{"password": "aHVudGVyMg=="},
		"stringData": map[string]any{"token": "abc"},
	}}
	out, err = (&codec{gvk: secretGVK}).compact(u)
	if err != nil {
		t.Fatal(err)
	}
	raw := string(out.(*Object).Raw())
	for _, leaked := range []string{"aHVudGVyMg==", "abc", "stringData"} {
		if strings.Contains(raw, leaked) {
			t.Errorf("unstructured secret keeps %q: %s", leaked, raw)
		}
	}
}

func TestCompactCustomResource(t *testing.T) {
	c := &codec{gvk: schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Widget"}}
	out, err := c.compact(realisticWidget(3))
	if err != nil {
		t.Fatal(err)
	}
	back, err := out.(*Object).Decode()
	if err != nil {
		t.Fatal(err)
	}
	u := back.(*unstructured.Unstructured)
	if u.GetName() != "widget-00003" || u.GetManagedFields() != nil {
		t.Errorf("got %s with managedFields %v", u.GetName(), u.GetManagedFields())
	}
	if color, _, _ := unstructured.NestedString(u.Object, "spec", "color"); color != "teal" {
		t.Errorf("spec.color = %q", color)
	}
}

// TestTypedIndexesMatchJSONPath: the code paths for the default indexes give exactly what
// their JSONPath expressions give.
func TestTypedIndexesMatchJSONPath(t *testing.T) {
	pod := realisticPod(3)
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "x", Image: "img:3"})
	for _, spec := range DefaultIndexes["pods"] {
		fast, err := compileIndexes([]IndexSpec{spec})
		if err != nil {
			t.Fatal(err)
		}
		slow := []compiledIndex{{name: fast[0].name, path: fast[0].path}}
		if fast[0].typed == nil {
			t.Fatalf("%s has no typed path", spec.Name)
		}
		if a, b := extract(fast, pod), extract(slow, pod); fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("%s: typed %v, JSONPath %v", spec.Name, a, b)
		}
	}
}

// HasIndex answers from the resource's indexes: true for every index the resource has
// (so that Field is asked whenever it could find a value), false for any other name.
func TestHasIndex(t *testing.T) {
	c, err := NewCompactor(podGVK, "pods", IndexSpec{Name: "team", JSONPath: "{.metadata.labels.team}"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		p := fleetPod(i, 5)
		if i%2 == 0 {
			p.Spec.Containers = nil // no images: the index has no value
		}
		o, err := c.Compact(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range o.Fields {
			if !o.HasIndex(f.Name) {
				t.Errorf("pod %d has a value of index %q, but HasIndex says it has no such index", i, f.Name)
			}
		}
		for _, name := range []string{"spec.nodeName", "status.phase", "images", "team"} {
			if !o.HasIndex(name) {
				t.Errorf("HasIndex(%q) = false", name)
			}
		}
		for _, name := range []string{"spec.schedulerName", "metadata.name", "", "image"} {
			if o.HasIndex(name) {
				t.Errorf("HasIndex(%q) = true", name)
			}
		}
	}
}
