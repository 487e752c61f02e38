package wire

import (
	"encoding"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Transcoding writes a built-in object's JSON straight from the protobuf fleetcache keeps,
// without decoding it into a Go object: the JSON is what encoding/json writes for the
// decoded object (field order, omitempty and omitzero, nulls, sorted map keys, escaping,
// and the types with their own JSON form: times, quantities, int-or-strings), byte for
// byte; TestTranscodeIsWhatEncodingJSONWrites checks it on every kind fleetcache caches by
// default, filled at random. Descriptors are derived once per Go type from its struct tags
// (`protobuf:"..."` and `json:"..."`), the same tags the generated code comes from.
//
// Anything the transcoder does not know (a float, a packed or out-of-order repeated field,
// a type marshalling itself as text) is errUnsupported: the caller then decodes and uses
// encoding/json, so an unusual object is slower, never wrong.

var errUnsupported = errors.New("not transcodable")

type kind uint8

const (
	kString kind = iota
	kBool
	kInt
	kUint
	kBytes     // []byte: base64
	kMessage   // a struct encoded field by field
	kTime      // metav1.Time
	kMarshaler // a type with its own MarshalJSON: decoded and marshalled alone
	kQuantity  // resource.Quantity: a kMarshaler, without reflection
	kIntOrString
	kMap
	kTypeMeta // the top-level object's TypeMeta: from the GroupVersionKind
	kZero     // a field protobuf does not carry: always its zero value
)

type field struct {
	name      string // `"name":`
	num       int
	kind      kind
	omitEmpty bool
	omitZero  bool
	repeated  bool // a slice (not []byte)
	pointer   bool
	inline    bool // an embedded struct whose fields are the parent's
	typ       reflect.Type
	msg       *message
	key, val  *field // maps
	// annotations marks ObjectMeta.Annotations, where the cluster annotation goes.
	annotations bool
}

type message struct {
	fields []field
	byNum  []int16 // protobuf field number -> index in fields, -1 for none
}

var (
	messages        sync.Map // reflect.Type -> *message or error
	timeType        = reflect.TypeFor[metav1.Time]()
	quantityType    = reflect.TypeFor[resource.Quantity]()
	intOrStringType = reflect.TypeFor[intstr.IntOrString]()
	typeMetaType    = reflect.TypeFor[metav1.TypeMeta]()
	objectMetaType  = reflect.TypeFor[metav1.ObjectMeta]()
	marshalerType   = reflect.TypeFor[json.Marshaler]()
	textType        = reflect.TypeFor[encoding.TextMarshaler]()
	unmarshalType   = reflect.TypeFor[interface{ Unmarshal([]byte) error }]()
)

func describe(t reflect.Type) (*message, error) {
	if m, ok := messages.Load(t); ok {
		if err, bad := m.(error); bad {
			return nil, err
		}
		return m.(*message), nil
	}
	m, err := build(t, map[reflect.Type]*message{})
	if err != nil {
		messages.Store(t, err)
		return nil, err
	}
	messages.Store(t, m)
	return m, nil
}

// build derives t's descriptor; seen holds those under construction (recursive types).
func build(t reflect.Type, seen map[reflect.Type]*message) (*message, error) {
	if m := seen[t]; m != nil {
		return m, nil
	}
	m := &message{}
	seen[t] = m
	maxNum := 0
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		f := field{omitEmpty: strings.Contains(","+opts+",", ",omitempty,"), omitZero: strings.Contains(","+opts+",", ",omitzero,")}
		if name == "" {
			name = sf.Name
		}
		f.name = string(AppendString(nil, name)) + ":"
		if pb := sf.Tag.Get("protobuf"); pb != "" {
			parts := strings.Split(pb, ",")
			if len(parts) < 2 {
				return nil, fmt.Errorf("%w: %s.%s: protobuf tag %q", errUnsupported, t, sf.Name, pb)
			}
			n, err := strconv.Atoi(parts[1])
			if err != nil {
				return nil, fmt.Errorf("%w: %s.%s: protobuf tag %q", errUnsupported, t, sf.Name, pb)
			}
			f.num = n
			maxNum = max(maxNum, n)
		}
		ft := sf.Type
		if sf.Anonymous && tag == "" || sf.Anonymous && name == sf.Name && strings.HasPrefix(tag, ",") {
			f.inline = true
		}
		if ft == typeMetaType {
			f.kind, f.inline = kTypeMeta, true
			m.fields = append(m.fields, f)
			continue
		}
		if f.num == 0 {
			if f.inline {
				return nil, fmt.Errorf("%w: %s.%s: embedded without protobuf", errUnsupported, t, sf.Name)
			}
			f.kind, f.typ = kZero, ft
			m.fields = append(m.fields, f)
			continue
		}
		if ft.Kind() == reflect.Pointer {
			f.pointer, ft = true, ft.Elem()
		}
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() != reflect.Uint8 {
			f.repeated, ft = true, ft.Elem()
			if ft.Kind() == reflect.Pointer {
				return nil, fmt.Errorf("%w: %s.%s: slice of pointers", errUnsupported, t, sf.Name)
			}
		}
		f.typ = ft
		if f.inline && (ft.Kind() != reflect.Struct || f.pointer || f.repeated) {
			return nil, fmt.Errorf("%w: %s.%s: embedded %s", errUnsupported, t, sf.Name, ft)
		}
		if err := classify(&f, ft, seen); err != nil {
			return nil, fmt.Errorf("%s.%s: %w", t, sf.Name, err)
		}
		if f.inline && f.kind != kMessage {
			return nil, fmt.Errorf("%w: %s.%s: embedded %s", errUnsupported, t, sf.Name, ft)
		}
		if f.omitZero && f.kind != kTime && f.kind != kString && f.kind != kInt && f.kind != kBool {
			return nil, fmt.Errorf("%w: %s.%s: omitzero on %s", errUnsupported, t, sf.Name, ft)
		}
		f.annotations = t == objectMetaType && sf.Name == "Annotations"
		m.fields = append(m.fields, f)
	}
	m.byNum = make([]int16, maxNum+1)
	for i := range m.byNum {
		m.byNum[i] = -1
	}
	for i, f := range m.fields {
		if f.num > 0 {
			m.byNum[f.num] = int16(i)
		}
	}
	return m, nil
}

// classify sets f's kind from its (element) type.
func classify(f *field, t reflect.Type, seen map[reflect.Type]*message) error {
	switch {
	case t == timeType:
		f.kind = kTime
		return nil
	case t == quantityType:
		f.kind = kQuantity
		return nil
	case t == intOrStringType:
		f.kind = kIntOrString
		return nil
	case reflect.PointerTo(t).Implements(marshalerType):
		if !reflect.PointerTo(t).Implements(unmarshalType) {
			return fmt.Errorf("%w: %s marshals itself but has no protobuf Unmarshal", errUnsupported, t)
		}
		f.kind = kMarshaler
		return nil
	case reflect.PointerTo(t).Implements(textType):
		return fmt.Errorf("%w: %s marshals itself as text", errUnsupported, t)
	}
	switch t.Kind() {
	case reflect.String:
		f.kind = kString
	case reflect.Bool:
		f.kind = kBool
	case reflect.Int, reflect.Int32, reflect.Int64:
		f.kind = kInt
	case reflect.Uint32, reflect.Uint64:
		f.kind = kUint
	case reflect.Slice: // []byte
		f.kind = kBytes
	case reflect.Struct:
		m, err := build(t, seen)
		if err != nil {
			return err
		}
		f.kind, f.msg = kMessage, m
	case reflect.Map:
		if t.Key().Kind() != reflect.String || reflect.PointerTo(t.Key()).Implements(textType) {
			return fmt.Errorf("%w: map key %s", errUnsupported, t.Key())
		}
		f.kind = kMap
		f.key = &field{kind: kString, typ: t.Key()}
		vt := t.Elem()
		f.val = &field{typ: vt}
		if vt.Kind() == reflect.Pointer || vt.Kind() == reflect.Slice && vt.Elem().Kind() != reflect.Uint8 {
			return fmt.Errorf("%w: map value %s", errUnsupported, vt)
		}
		if err := classify(f.val, vt, seen); err != nil {
			return err
		}
		if f.val.kind == kMap {
			return fmt.Errorf("%w: map of maps", errUnsupported)
		}
	default:
		return fmt.Errorf("%w: %s", errUnsupported, t)
	}
	return nil
}

// occurrence is one field found in a message's bytes.
type occurrence struct {
	field      int16
	varint     uint64
	start, end int32 // the value's bytes, for length-delimited fields
}

// transcoder holds the scratch space of one encoding goroutine: the occurrences of every
// message being written (a stack: nested messages push theirs above their parent's), and
// for each field of each message its first occurrence and count.
type transcoder struct {
	occs []occurrence
	idx  []int32
}

var transcoders = sync.Pool{New: func() any {
	return &transcoder{occs: make([]occurrence, 0, 256), idx: make([]int32, 0, 512)}
}}

// view is a string over b without copying: b is a cached object's encoding, which is
// never modified, and the string does not outlive the call it is passed to.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// AppendProtoJSON appends the JSON of a built-in object, given as its protobuf bytes and
// Go type, to dst; with cluster set, its metadata carries the annotation
// fleetcache.io/cluster. It returns errUnsupported when the object needs the slow path.
func appendProtoJSON(dst []byte, raw []byte, typ reflect.Type, gvk schema.GroupVersionKind, cluster string) ([]byte, error) {
	m, err := describe(typ)
	if err != nil {
		return dst, err
	}
	tc := transcoders.Get().(*transcoder)
	defer transcoders.Put(tc)
	tc.occs = tc.occs[:0]
	top := &topLevel{gvk: gvk, cluster: cluster}
	dst = append(dst, '{')
	comma := false
	dst, err = tc.fields(dst, m, raw, &comma, top)
	return append(dst, '}'), err
}

// topLevel is what only the top-level object's JSON has: its kind, and the cluster
// annotation in its metadata.
type topLevel struct {
	gvk     schema.GroupVersionKind
	cluster string
}

func varint(b []byte, i int) (uint64, int, error) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if i >= len(b) {
			return 0, 0, errUnsupported
		}
		c := b[i]
		i++
		v |= uint64(c&0x7F) << shift
		if c < 0x80 {
			return v, i, nil
		}
	}
	return 0, 0, errUnsupported
}

// fields appends m's fields (without braces) from data; comma says whether one was
// written before. top is set for the top-level object only.
func (tc *transcoder) fields(dst []byte, m *message, data []byte, comma *bool, top *topLevel) ([]byte, error) {
	base, ibase := len(tc.occs), len(tc.idx)
	dst, err := tc.fieldsAt(dst, m, data, comma, top, base, ibase)
	tc.occs, tc.idx = tc.occs[:base], tc.idx[:ibase]
	return dst, err
}

func (tc *transcoder) fieldsAt(dst []byte, m *message, data []byte, comma *bool, top *topLevel, base, ibase int) ([]byte, error) {
	n := len(m.fields)
	tc.idx = append(tc.idx, make([]int32, 2*n)...)
	// first[fi], count[fi] live at idx[ibase+2*fi], idx[ibase+2*fi+1]; re-sliced after
	// every nested call, which may grow idx.
	last := int16(-1)
	for i := 0; i < len(data); {
		tag, j, err := varint(data, i)
		if err != nil {
			return dst, err
		}
		i = j
		num, wt := int(tag>>3), tag&7
		o := occurrence{field: -1}
		switch wt {
		case 0:
			if o.varint, i, err = varint(data, i); err != nil {
				return dst, err
			}
		case 2:
			n, j, err := varint(data, i)
			if err != nil || j+int(n) > len(data) || int(n) < 0 {
				return dst, errUnsupported
			}
			o.start, o.end = int32(j), int32(j+int(n))
			i = j + int(n)
		default:
			return dst, errUnsupported // fixed32/64 (floats) are not in the cached kinds
		}
		if num <= 0 || num >= len(m.byNum) || m.byNum[num] < 0 {
			continue // unknown to this Go type: decoding drops it too
		}
		fi := m.byNum[num]
		f := &m.fields[fi]
		if (wt == 0) != (f.kind == kBool || f.kind == kInt || f.kind == kUint) {
			return dst, errUnsupported // e.g. a packed repeated number
		}
		o.field = fi
		fc := tc.idx[ibase+2*int(fi):]
		if fc[1] == 0 {
			fc[0] = int32(len(tc.occs) - base)
		} else if fi != last {
			return dst, errUnsupported // a repeated field in pieces
		}
		fc[1]++
		last = fi
		tc.occs = append(tc.occs, o)
	}
	var err error
	for fi := range m.fields {
		f := &m.fields[fi]
		first, count := int(tc.idx[ibase+2*fi]), int(tc.idx[ibase+2*fi+1])
		occs := tc.occs[base+first : base+first+count]
		if dst, err = tc.field(dst, f, occs, data, comma, top); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

func (tc *transcoder) name(dst []byte, f *field, comma *bool) []byte {
	if *comma {
		dst = append(dst, ',')
	}
	*comma = true
	return append(dst, f.name...)
}

func (tc *transcoder) field(dst []byte, f *field, occs []occurrence, data []byte, comma *bool, top *topLevel) ([]byte, error) {
	var err error
	switch {
	case f.kind == kTypeMeta:
		if top != nil {
			if k := top.gvk.Kind; k != "" {
				dst = append(tc.name(dst, &field{name: `"kind":`}, comma), AppendString(nil, k)...)
			}
			if v := top.gvk.GroupVersion().String(); v != "" {
				dst = append(tc.name(dst, &field{name: `"apiVersion":`}, comma), AppendString(nil, v)...)
			}
		}
		return dst, nil
	case f.kind == kZero:
		return tc.zero(dst, f, comma)
	case f.inline:
		var sub []byte
		if len(occs) > 0 {
			o := occs[len(occs)-1]
			sub = data[o.start:o.end]
		}
		return tc.fields(dst, f.msg, sub, comma, nil)
	case f.repeated:
		if len(occs) == 0 {
			if f.omitEmpty {
				return dst, nil
			}
			return append(tc.name(dst, f, comma), "null"...), nil
		}
		dst = append(tc.name(dst, f, comma), '[')
		for i, o := range occs {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, err = tc.value(dst, f, o, data, nil); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	case f.kind == kMap:
		var extra string
		if f.annotations && top != nil && top.cluster != "" {
			extra = top.cluster
		}
		if len(occs) == 0 && extra == "" {
			if f.omitEmpty {
				return dst, nil
			}
			return append(tc.name(dst, f, comma), "null"...), nil
		}
		return tc.mapValue(tc.name(dst, f, comma), f, occs, data, extra)
	case f.pointer:
		if len(occs) == 0 {
			if f.omitEmpty {
				return dst, nil
			}
			return append(tc.name(dst, f, comma), "null"...), nil
		}
		return tc.value(tc.name(dst, f, comma), f, occs[len(occs)-1], data, nil)
	}
	// A value (not a pointer, slice or map): absent means zero.
	var o occurrence
	present := len(occs) > 0
	if present {
		o = occs[len(occs)-1]
	}
	switch f.kind {
	case kString:
		if (f.omitEmpty || f.omitZero) && o.end == o.start {
			return dst, nil
		}
	case kBool, kInt, kUint:
		if (f.omitEmpty || f.omitZero) && o.varint == 0 {
			return dst, nil
		}
	case kBytes:
		if !present && !f.omitEmpty {
			return append(tc.name(dst, f, comma), "null"...), nil
		}
		if o.end == o.start && f.omitEmpty {
			return dst, nil
		}
	case kTime:
		if f.omitZero && o.end == o.start {
			return dst, nil // a zero time is empty in protobuf
		}
	}
	var subTop *topLevel
	if f.typ == objectMetaType && top != nil {
		subTop = &topLevel{cluster: top.cluster} // the object's own metadata
	}
	return tc.value(tc.name(dst, f, comma), f, o, data, subTop)
}

// value appends one value of f's kind.
func (tc *transcoder) value(dst []byte, f *field, o occurrence, data []byte, top *topLevel) ([]byte, error) {
	b := data[o.start:o.end]
	switch f.kind {
	case kString:
		return AppendString(dst, view(b)), nil
	case kBool:
		return strconv.AppendBool(dst, o.varint != 0), nil
	case kInt:
		if f.typ.Kind() == reflect.Int32 {
			return strconv.AppendInt(dst, int64(int32(o.varint)), 10), nil
		}
		return strconv.AppendInt(dst, int64(o.varint), 10), nil
	case kUint:
		if f.typ.Kind() == reflect.Uint32 {
			return strconv.AppendUint(dst, uint64(uint32(o.varint)), 10), nil
		}
		return strconv.AppendUint(dst, o.varint, 10), nil
	case kBytes:
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, b)
		return append(dst, '"'), nil
	case kTime:
		return appendProtoTime(dst, b)
	case kQuantity:
		var q resource.Quantity
		if err := q.Unmarshal(b); err != nil {
			return dst, errUnsupported
		}
		out, err := q.MarshalJSON()
		if err != nil {
			return dst, errUnsupported
		}
		return append(dst, out...), nil
	case kIntOrString:
		return appendIntOrString(dst, b)
	case kMarshaler:
		v := reflect.New(f.typ)
		if err := v.Interface().(interface{ Unmarshal([]byte) error }).Unmarshal(b); err != nil {
			return dst, errUnsupported
		}
		out, err := json.Marshal(v.Interface())
		if err != nil {
			return dst, errUnsupported
		}
		return append(dst, out...), nil
	case kMessage:
		dst = append(dst, '{')
		comma := false
		dst, err := tc.fields(dst, f.msg, b, &comma, top)
		return append(dst, '}'), err
	}
	return dst, errUnsupported
}

// appendProtoTime appends a metav1.Time from its protobuf Timestamp (seconds only, as
// metav1.Time decodes it).
func appendProtoTime(dst []byte, b []byte) ([]byte, error) {
	if len(b) == 0 {
		return append(dst, "null"...), nil
	}
	var secs int64
	for i := 0; i < len(b); {
		tag, j, err := varint(b, i)
		if err != nil {
			return dst, err
		}
		v, j, err := varint(b, j)
		if err != nil || tag&7 != 0 {
			return dst, errUnsupported
		}
		i = j
		if tag>>3 == 1 {
			secs = int64(v)
		}
	}
	return appendTime(dst, time.Unix(secs, 0)), nil
}

// appendIntOrString appends an intstr.IntOrString from its protobuf (type 1, intVal 2,
// strVal 3) as its MarshalJSON does: a number or a string.
func appendIntOrString(dst []byte, b []byte) ([]byte, error) {
	var typ, num uint64
	var str []byte
	for i := 0; i < len(b); {
		tag, j, err := varint(b, i)
		if err != nil {
			return dst, err
		}
		switch tag & 7 {
		case 0:
			v, k, err := varint(b, j)
			if err != nil {
				return dst, err
			}
			switch tag >> 3 {
			case 1:
				typ = v
			case 2:
				num = v
			}
			i = k
		case 2:
			n, k, err := varint(b, j)
			if err != nil || k+int(n) > len(b) {
				return dst, errUnsupported
			}
			if tag>>3 == 3 {
				str = b[k : k+int(n)]
			}
			i = k + int(n)
		default:
			return dst, errUnsupported
		}
	}
	switch intstr.Type(typ) {
	case intstr.Int:
		return strconv.AppendInt(dst, int64(int32(num)), 10), nil
	case intstr.String:
		return AppendString(dst, view(str)), nil
	}
	return dst, errUnsupported
}

type mapEntry struct {
	key string
	val occurrence // absent: the zero value (generated decoders start from one)
	src []byte
}

// mapValue appends a map's entries, sorted by key as encoding/json sorts them, with the
// cluster annotation when extra is set.
func (tc *transcoder) mapValue(dst []byte, f *field, occs []occurrence, data []byte, extra string) ([]byte, error) {
	var buf [16]mapEntry
	entries := buf[:0]
	for _, o := range occs {
		b := data[o.start:o.end]
		e := mapEntry{src: b}
		for i := 0; i < len(b); {
			tag, j, err := varint(b, i)
			if err != nil || tag&7 != 2 && tag>>3 == 1 {
				return dst, errUnsupported
			}
			var v occurrence
			switch tag & 7 {
			case 0:
				if v.varint, j, err = varint(b, j); err != nil {
					return dst, err
				}
			case 2:
				n, k, err := varint(b, j)
				if err != nil || k+int(n) > len(b) {
					return dst, errUnsupported
				}
				v.start, v.end, j = int32(k), int32(k+int(n)), k+int(n)
			default:
				return dst, errUnsupported
			}
			i = j
			switch tag >> 3 {
			case 1:
				e.key = view(b[v.start:v.end])
			case 2:
				e.val = v
			}
		}
		if extra != "" && e.key == ClusterAnnotation {
			continue // replaced by this cluster's
		}
		entries = append(entries, e)
	}
	if extra != "" {
		entries = append(entries, mapEntry{key: ClusterAnnotation})
	}
	// Generated encoders write map keys sorted already; sort only when they are not.
	if !slices.IsSortedFunc(entries, compareEntries) {
		slices.SortFunc(entries, compareEntries)
	}
	dst = append(dst, '{')
	var err error
	for i, e := range entries {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendString(dst, e.key)
		dst = append(dst, ':')
		switch {
		case extra != "" && e.key == ClusterAnnotation && e.src == nil:
			dst = AppendString(dst, extra)
		default:
			if dst, err = tc.value(dst, f.val, e.val, e.src, nil); err != nil {
				return dst, err
			}
		}
	}
	return append(dst, '}'), nil
}

func compareEntries(a, b mapEntry) int { return strings.Compare(a.key, b.key) }

// zero appends a field protobuf does not carry: its zero value, as encoding/json writes
// it.
func (tc *transcoder) zero(dst []byte, f *field, comma *bool) ([]byte, error) {
	v := reflect.Zero(f.typ)
	if f.omitEmpty && v.IsZero() && f.typ.Kind() != reflect.Struct {
		return dst, nil
	}
	out, err := json.Marshal(v.Interface())
	if err != nil {
		return dst, errUnsupported
	}
	return append(tc.name(dst, f, comma), out...), nil
}
