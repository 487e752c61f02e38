package clusters

import (
	"fmt"
	"reflect"
	"slices"
	"sync"
	"unique"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
)

// lastAppliedAnnotation is kubectl's client-side-apply copy of the whole object: as large as
// the object itself and of no use to a reader.
const lastAppliedAnnotation = corev1.LastAppliedConfigAnnotation

// Object is the cached form of one Kubernetes object: its identity and labels decoded, for
// keys, indexes and selectors, and the whole object (minus managedFields, the
// last-applied annotation and Secret values) encoded: protobuf for built-in types, JSON
// for custom resources, kept compressed (body.go); the namespace, labels and owners are
// shared with the objects alike (intern.go). Measured on a realistic pod this takes
// about a fourteenth of the memory of a typed object (see BenchmarkRetainedBytes).
//
// Objects are shared by every reader of the cache and immutable: nothing may modify one.
// Decode returns a fresh copy the caller owns.
type Object struct {
	metav1.TypeMeta
	// ObjectMeta holds name, namespace, UID, resourceVersion, generation, labels, owner
	// references and the creation and deletion timestamps; annotations and the rest of the
	// metadata are only in the encoded form.
	metav1.ObjectMeta

	// Fields are the values of the resource's indexes (IndexSpec), extracted once when
	// the object was stored.
	Fields []Field

	// body is the encoded object, compressed with dict unless dict is nil (see body.go).
	body  []byte
	dict  *dictionary
	codec *codec
	// shape holds the namespace, labels and owners, shared with objects alike (see
	// intern.go); ObjectMeta's fields point into it.
	shape *shape
	// cells are the table cells of a built-in kind (see AppendCells), computed once here
	// so that serving a table needs no decoding.
	cells string
}

// codec turns one resource's objects into bytes and back.
type codec struct {
	gvk schema.GroupVersionKind
	// trainer learns the resource's compression dictionary from its first objects.
	trainer trainer
	apiOnce sync.Once
	api     string // gvk.GroupVersion().String(), made once
	// newTyped returns an empty typed object for protobuf decoding; nil means JSON and
	// unstructured.
	newTyped func() protoObject
	// indexes are evaluated on the full object before it is compacted.
	indexes []compiledIndex
	// secretAnnotations are the annotation keys whose values a Secret keeps
	// (Options.SecretAnnotations); every other value is dropped.
	secretAnnotations []string

	typeOnce sync.Once
	goType   reflect.Type // of newTyped's objects, once asked for
}

// typ is the Go type (not a pointer) protobuf-encoded objects decode into.
func (c *codec) typ() reflect.Type {
	c.typeOnce.Do(func() { c.goType = reflect.TypeOf(c.newTyped()).Elem() })
	return c.goType
}

// protoObject is what every generated Kubernetes API type implements.
type protoObject interface {
	runtime.Object
	Marshal() ([]byte, error)
	Unmarshal([]byte) error
}

var _ metav1.Object = (*Object)(nil)
var _ runtime.Object = (*Object)(nil)

// Decode returns the full object as a new typed object (built-in resources) or
// *unstructured.Unstructured (custom resources). The caller owns it.
func (o *Object) Decode() (runtime.Object, error) {
	raw := o.body
	if o.dict != nil {
		bp := scratch.Get().(*[]byte)
		defer scratch.Put(bp)
		var err error
		raw, err = o.dict.decompress((*bp)[:0], o.body)
		*bp = raw[:0]
		if err != nil {
			return nil, fmt.Errorf("decode %s %s/%s: %w", o.codec.gvk.Kind, o.Namespace, o.Name, err)
		}
		// Both decoders below copy what they keep: raw goes back to the pool.
	}
	if o.codec.newTyped != nil {
		obj := o.codec.newTyped()
		if err := obj.Unmarshal(raw); err != nil {
			return nil, fmt.Errorf("decode %s %s/%s: %w", o.codec.gvk.Kind, o.Namespace, o.Name, err)
		}
		obj.GetObjectKind().SetGroupVersionKind(o.codec.gvk)
		return obj, nil
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("decode %s %s/%s: %w", o.codec.gvk.Kind, o.Namespace, o.Name, err)
	}
	return u, nil
}

// appendRaw appends the encoded form to dst, decompressing it if it is kept compressed.
func (o *Object) appendRaw(dst []byte) ([]byte, error) {
	if o.dict == nil {
		return append(dst, o.body...), nil
	}
	return o.dict.decompress(dst, o.body)
}

// Protobuf returns, for a built-in kind, the object's protobuf encoding, the Go type it
// decodes into and its kind; ok is false for custom resources, which are kept as JSON.
// raw is either buf's storage (appended from buf[:0]) or the object's own bytes, which
// are shared: never modify it.
func (o *Object) Protobuf(buf []byte) (raw []byte, typ reflect.Type, gvk schema.GroupVersionKind, ok bool, err error) {
	if o.codec.newTyped == nil {
		return nil, nil, schema.GroupVersionKind{}, false, nil
	}
	if o.dict == nil {
		return o.body, o.codec.typ(), o.codec.gvk, true, nil
	}
	raw, err = o.dict.decompress(buf[:0], o.body)
	return raw, o.codec.typ(), o.codec.gvk, true, err
}

// Raw returns a copy of the encoded form (protobuf for built-in types, JSON for custom
// resources).
func (o *Object) Raw() []byte {
	raw, err := o.appendRaw(nil)
	if err != nil {
		panic(err) // the bytes were compressed by this process: corrupt memory
	}
	return raw
}

// StoredSize is how many bytes the encoded form takes in memory, and whether it is
// compressed.
func (o *Object) StoredSize() (n int, compressed bool) { return len(o.body), o.dict != nil }

// FlatLabels are the object's labels as one interned string: "key\x01value" pairs,
// sorted, joined by \x00 (LabelSep, KVSep). Objects with the same labels share it.
func (o *Object) FlatLabels() unique.Handle[string] {
	if o.shape == nil {
		return unique.Make(flatten(o.Labels))
	}
	return o.shape.flat
}

// DeepCopyObject copies the decoded metadata and fields; the encoded bytes are immutable
// and shared.
func (o *Object) DeepCopyObject() runtime.Object {
	c := *o
	o.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	c.Fields = append([]Field(nil), o.Fields...)
	return &c
}

// HasIndex reports whether the object's resource has an index of that name (IndexSpec):
// only then may Field find a value. It reads the resource's description, shared by its
// objects, not the object's own values: a scan asking it of every object stays in cache.
func (o *Object) HasIndex(name string) bool {
	if o.codec == nil {
		return true // not made by a codec: only its fields can tell
	}
	for _, ix := range o.codec.indexes {
		if ix.name == name {
			return true
		}
	}
	return false
}

// Field returns the first value of the named index, and whether there was one.
func (o *Object) Field(name string) (string, bool) {
	for _, f := range o.Fields {
		if f.Name == name {
			return f.Value, true
		}
	}
	return "", false
}

// trim removes from a decoded object what fleetcache never keeps. It modifies obj, which
// must be freshly decoded and not yet shared. A Secret keeps its key names and nothing
// of its values: data and stringData are emptied, and so is every annotation's value
// but those of keepAnnotations, since deploy tools keep whole applied manifests in
// annotations of their own (kapp's kapp.k14s.io/original, for one).
func trim(obj metav1.Object, keepAnnotations []string) {
	obj.SetManagedFields(nil)
	if a := obj.GetAnnotations(); a != nil {
		if _, ok := a[lastAppliedAnnotation]; ok {
			delete(a, lastAppliedAnnotation)
			if len(a) == 0 {
				obj.SetAnnotations(nil)
			}
		}
	}
	switch s := obj.(type) {
	case *corev1.Secret:
		s.Data = emptyValues(s.Data)
		s.StringData = nil
		emptyAnnotations(obj, keepAnnotations)
	case *unstructured.Unstructured:
		if s.GetKind() == "Secret" && s.GroupVersionKind().Group == "" {
			emptyAnnotations(obj, keepAnnotations)
			for _, field := range []string{"data", "stringData"} {
				if m, ok := s.Object[field].(map[string]any); ok {
					for k := range m {
						m[k] = ""
					}
				}
			}
			delete(s.Object, "stringData")
		}
	}
}

// emptyAnnotations keeps the object's annotation keys and drops their values, but for
// the keys of keep.
func emptyAnnotations(obj metav1.Object, keep []string) {
	a := obj.GetAnnotations()
	if len(a) == 0 {
		return
	}
	for k := range a {
		if !slices.Contains(keep, k) {
			a[k] = ""
		}
	}
	obj.SetAnnotations(a)
}

// emptyValues keeps a Secret's key names, which say what it holds, and drops the values.
func emptyValues(data map[string][]byte) map[string][]byte {
	if data == nil {
		return nil
	}
	out := make(map[string][]byte, len(data))
	for k := range data {
		out[k] = nil
	}
	return out
}

// compact turns a freshly decoded watch or list object into its cached form. It is the
// informers' transform: it runs once per object, before the object is stored.
func (c *codec) compact(in any) (any, error) {
	obj, ok := in.(runtime.Object)
	if !ok {
		// DeletedFinalStateUnknown and friends: keep as they are.
		return in, nil
	}
	if o, ok := obj.(*Object); ok {
		return o, nil // already compact (a replayed object)
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return in, nil
	}
	trim(m, c.secretAnnotations)
	fields := extract(c.indexes, obj)
	var cells string
	if _, typed := obj.(protoObject); typed {
		cells = tableCells(c.gvk.GroupKind(), obj)
	}
	for i := range fields {
		fields[i].Value = intern(fields[i].Value)
	}
	c.apiOnce.Do(func() { c.api = c.gvk.GroupVersion().String() })
	sh := shapeOf(m.GetNamespace(), m.GetLabels(), m.GetOwnerReferences())
	out := &Object{Fields: fields, cells: cells, TypeMeta: metav1.TypeMeta{APIVersion: c.api, Kind: c.gvk.Kind}, codec: c, shape: sh}
	out.ObjectMeta = metav1.ObjectMeta{
		Name:              m.GetName(),
		Namespace:         sh.namespace,
		UID:               m.GetUID(),
		ResourceVersion:   m.GetResourceVersion(),
		Generation:        m.GetGeneration(),
		CreationTimestamp: m.GetCreationTimestamp(),
		DeletionTimestamp: m.GetDeletionTimestamp(),
		Labels:            sh.labels,
		OwnerReferences:   sh.owners,
	}
	var raw []byte
	var err error
	switch o := obj.(type) {
	case *unstructured.Unstructured:
		raw, err = o.MarshalJSON()
	case protoObject:
		raw, err = o.Marshal()
	default:
		err = fmt.Errorf("%T is neither a generated API type nor unstructured", obj)
	}
	if err != nil {
		return nil, fmt.Errorf("encode %s %s/%s: %w", c.gvk.Kind, m.GetNamespace(), m.GetName(), err)
	}
	if d := c.trainer.current(); d != nil {
		if out.body, err = d.compress(raw); err != nil {
			return nil, fmt.Errorf("encode %s %s/%s: %w", c.gvk.Kind, m.GetNamespace(), m.GetName(), err)
		}
		out.dict = d
		return out, nil
	}
	out.body = raw
	c.trainer.observe(raw, sh.flat.Value())
	return out, nil
}

// Compactor turns decoded objects of one kind into their cached form, exactly as the
// informers do, evaluating DefaultIndexes of the resource and the given indexes. It is
// for tests, benchmarks and tools, and not safe for concurrent use.
type Compactor struct {
	codec *codec
	json  *codec // for unstructured objects of a built-in kind
}

// NewCompactor returns a Compactor for gvk; typed objects of built-in kinds are encoded as
// protobuf, everything else as JSON.
func NewCompactor(gvk schema.GroupVersionKind, resource string, indexes ...IndexSpec) (*Compactor, error) {
	c := &codec{gvk: gvk}
	if obj, err := scheme.Scheme.New(gvk); err == nil {
		if _, ok := obj.(protoObject); ok {
			c.newTyped = func() protoObject { o, _ := scheme.Scheme.New(gvk); return o.(protoObject) }
		}
	}
	compiled, err := compileIndexes(append(append([]IndexSpec(nil), DefaultIndexes[resource]...), indexes...))
	if err != nil {
		return nil, err
	}
	c.indexes = compiled
	return &Compactor{codec: c}, nil
}

// Compact converts obj, which it modifies; a typed object must be of the Compactor's kind
// and an unstructured one is kept as JSON.
func (c *Compactor) Compact(obj runtime.Object) (*Object, error) {
	cd := c.codec
	if _, ok := obj.(*unstructured.Unstructured); ok && cd.newTyped != nil {
		if c.json == nil {
			c.json = &codec{gvk: cd.gvk, indexes: cd.indexes}
		}
		cd = c.json
	}
	out, err := cd.compact(obj)
	if err != nil {
		return nil, err
	}
	return out.(*Object), nil
}
