package clusters

import (
	"runtime"
	"slices"
	"strings"
	"sync"
	"unique"
	"weak"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Most of an object's decoded metadata repeats across objects: every pod of a ReplicaSet
// has the same namespace, labels and owner; a fleet has few node names, images and
// phases. The cache keeps one copy of each.
//
//   - shapes: the namespace, labels and owner references of an object, shared by every
//     object that has the same ones (looked up by value in a table of weak pointers, so
//     a shape lives exactly as long as some object uses it);
//   - strings: index values (node names, images, phases) through a bounded table that is
//     emptied when full, so that churn cannot grow it (strings handed out stay valid).

// Separators of flattened labels (FlatLabels): labels are "key\x01value", sorted, joined
// by \x00. Neither byte can appear in a label key or value.
const (
	LabelSep = "\x00"
	KVSep    = "\x01"
)

// shape is what objects alike share; it is immutable.
type shape struct {
	namespace string
	labels    map[string]string
	owners    []metav1.OwnerReference
	flat      unique.Handle[string] // labels flattened (FlatLabels)
}

var shapes = struct {
	sync.Mutex
	m map[string]weak.Pointer[shape]
}{m: map[string]weak.Pointer[shape]{}}

// shapeOf returns the shared shape with these values; the arguments are not kept.
func shapeOf(namespace string, labels map[string]string, owners []metav1.OwnerReference) *shape {
	flat := flatten(labels)
	key := make([]byte, 0, len(namespace)+len(flat)+64*len(owners)+2)
	key = append(key, namespace...)
	key = append(key, 0)
	key = append(key, flat...)
	for _, o := range owners {
		key = append(key, 2)
		key = append(key, o.APIVersion...)
		key = append(key, 0)
		key = append(key, o.Kind...)
		key = append(key, 0)
		key = append(key, o.Name...)
		key = append(key, 0)
		key = append(key, o.UID...)
		key = append(key, 0, flag(o.Controller), flag(o.BlockOwnerDeletion))
	}
	shapes.Lock()
	defer shapes.Unlock()
	if wp, ok := shapes.m[string(key)]; ok {
		if s := wp.Value(); s != nil {
			return s
		}
	}
	s := &shape{namespace: strings.Clone(namespace), flat: unique.Make(flat)}
	if len(labels) > 0 {
		s.labels = make(map[string]string, len(labels))
		for k, v := range labels {
			s.labels[intern(k)] = intern(v)
		}
	}
	if len(owners) > 0 {
		s.owners = slices.Clone(owners)
		for i := range s.owners {
			o := &s.owners[i]
			o.APIVersion, o.Kind = intern(o.APIVersion), intern(o.Kind)
		}
	}
	k := string(key)
	shapes.m[k] = weak.Make(s)
	runtime.AddCleanup(s, forgetShape, k)
	return s
}

// forgetShape drops a collected shape's entry, unless a new one took its place.
func forgetShape(key string) {
	shapes.Lock()
	defer shapes.Unlock()
	if wp, ok := shapes.m[key]; ok && wp.Value() == nil {
		delete(shapes.m, key)
	}
}

// flag encodes an optional bool in a shape key.
func flag(b *bool) byte {
	switch {
	case b == nil:
		return 'n'
	case *b:
		return 't'
	}
	return 'f'
}

// flatten returns labels as one string (see LabelSep).
func flatten(m map[string]string) string {
	switch len(m) {
	case 0:
		return ""
	case 1:
		for k, v := range m {
			return k + KVSep + v
		}
	}
	pairs := make([]string, 0, len(m))
	for k, v := range m {
		pairs = append(pairs, k+KVSep+v)
	}
	slices.Sort(pairs)
	return strings.Join(pairs, LabelSep)
}

// internMax bounds the string table: at this many entries it starts again empty.
const internMax = 1 << 16

var strs = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

// intern returns a shared copy of s.
func intern(s string) string {
	if s == "" {
		return ""
	}
	strs.Lock()
	defer strs.Unlock()
	if c, ok := strs.m[s]; ok {
		return c
	}
	if len(strs.m) >= internMax {
		clear(strs.m)
	}
	s = strings.Clone(s)
	strs.m[s] = s
	return s
}
