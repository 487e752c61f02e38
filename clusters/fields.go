package clusters

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Field paths: a field selector or a group-by on a field that no index answers reads that
// field from every object it visits. Decoding the whole object for it (protobuf into a
// typed object, then runtime.DefaultUnstructuredConverter into a map) cost about 90 µs a
// realistic pod and a few hundred allocations; a FieldReader reads the one value from
// the stored bytes instead: it decompresses the body into a buffer of its own and walks
// the protobuf (or, for custom resources, the JSON) to the field, stepping over
// everything else.
//
// A path means what it meant when objects were decoded for it: JSON field names joined
// by dots, looked up in the object's unstructured form (unstructured.NestedFieldNoCopy)
// and printed by fmt.Sprint; a path that is absent, null, a map or a list, or that goes
// through a list or a scalar, reads as "". ValueDecoded computes exactly that, by
// decoding. Value gives the same answer from the bytes, and hands a path to ValueDecoded
// when it cannot: a type that converts itself in a way of its own (MicroTime, Duration,
// RawExtension, ...), a float, a field without protobuf, or bytes it does not expect (a
// field repeated where it should not be, a packed list). TestFieldReaderMatchesDecoding
// holds the two to each other on every kind fleetcache caches by default, filled at
// random, on every path into them.
//
// One difference is left, on objects no apiserver sends: when the converter cannot
// convert an object at all (an IntOrString of an unknown type, an unsigned number above
// MaxInt64), decoding reads every path of it as ""; Value reads the paths that do not
// touch the broken value as they are.

// FieldReader reads field values of stored objects without decoding them. It keeps the
// last object's decompressed body (reading several fields of one object decompresses it
// once) and what it learnt of each path. The zero value is ready to use; a FieldReader
// is not safe for concurrent use: each scanning goroutine has its own.
type FieldReader struct {
	obj *Object // whose encoded form raw is
	raw []byte  // buf, or obj's own body when it is stored plainly
	buf []byte  // decompression buffer
	// out holds the values formatted for obj (numbers, times): the strings returned point
	// into it until the reader moves to another object.
	out   []byte
	plans []cachedPlan
	// The slow path's decoded object, for the next path of the same object.
	decodedFor *Object
	decoded    map[string]any
	fallbacks  int // reads Value handed to ValueDecoded, for tests
}

type cachedPlan struct {
	codec *codec
	path  string
	plan  *fieldPlan
}

// maxPlans bounds a reader's plan cache: a pooled reader serves many queries.
const maxPlans = 32

// Value returns the value of path in o, as ValueDecoded would. The string may share
// memory with the reader: it is valid until the reader reads another object (clone it to
// keep it).
func (r *FieldReader) Value(o *Object, path string) string {
	p := r.plan(o.codec, path)
	switch p.op {
	case opConst:
		return ""
	case opKind:
		return o.codec.gvk.Kind
	case opAPIVersion:
		return o.codec.gvk.GroupVersion().String()
	case opDecode:
		r.fallbacks++
		return r.ValueDecoded(o, path)
	}
	if r.obj != o && !r.load(o) {
		r.fallbacks++
		return r.ValueDecoded(o, path)
	}
	var v string
	var ok bool
	if p.op == opJSON {
		v, ok = r.readJSON(p.segs)
	} else {
		v, ok = r.readProto(p)
	}
	if !ok {
		r.fallbacks++
		return r.ValueDecoded(o, path)
	}
	return v
}

// ValueDecoded returns the value of path in o by decoding o: the object's unstructured
// form (for built-in kinds, runtime.DefaultUnstructuredConverter's), the path's value in
// it (unstructured.NestedFieldNoCopy) printed by fmt.Sprint, and "" for a path that is
// absent, null, a map or a list, or that cannot be followed. It is what Value answers,
// the slow way: Value's fallback, and the reference its tests and benchmarks compare
// with. The decoded object is kept for the next path of the same object.
func (r *FieldReader) ValueDecoded(o *Object, path string) string {
	if r.decodedFor != o {
		r.decodedFor, r.decoded = o, map[string]any{}
		if obj, err := o.Decode(); err == nil {
			if u, ok := obj.(*unstructured.Unstructured); ok {
				r.decoded = u.Object
			} else if m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj); err == nil {
				r.decoded = m
			}
		}
	}
	v, found, err := unstructured.NestedFieldNoCopy(r.decoded, strings.Split(path, ".")...)
	if !found || err != nil || v == nil {
		return ""
	}
	switch v.(type) {
	case map[string]any, []any:
		return ""
	}
	return fmt.Sprint(v)
}

// load makes o the reader's object: its encoded form in raw, decompressed into buf if
// it is kept compressed.
func (r *FieldReader) load(o *Object) bool {
	r.obj, r.out = nil, r.out[:0]
	if o.dict == nil {
		r.raw = o.body
	} else {
		raw, err := o.dict.decompress(r.buf[:0], o.body)
		r.buf = raw[:0]
		if err != nil {
			return false
		}
		r.raw = raw
	}
	r.obj = o
	return true
}

func (r *FieldReader) plan(c *codec, path string) *fieldPlan {
	for i := range r.plans {
		if p := &r.plans[i]; p.codec == c && p.path == path {
			return p.plan
		}
	}
	if len(r.plans) >= maxPlans {
		r.plans = r.plans[:0]
	}
	segs := strings.Split(path, ".")
	var p *fieldPlan
	if c.newTyped == nil {
		p = &fieldPlan{op: opJSON, segs: segs}
	} else {
		p = compileProto(c.typ(), segs)
	}
	r.plans = append(r.plans, cachedPlan{codec: c, path: path, plan: p})
	return p
}

// view is a string over b without copying: b is a stored body (never modified) or the
// reader's buffer, and the contract of Value says for how long the string holds.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// The protobuf side: descriptors of the Go types, derived once per type from their
// struct tags (`json:"..."`, which the converter reads, and `protobuf:"..."`, which the
// generated code comes from), and per path a plan: the fields to step into.

type pbKind uint8

const (
	pbString pbKind = iota
	pbBool
	pbInt  // signed, sign-extended from 32 bits when bits32
	pbUint // unsigned
	pbBytes
	pbTime     // metav1.Time: RFC 3339, in UTC, to the second
	pbQuantity // resource.Quantity: its canonical string
	pbIntOrString
	pbMessage
	pbMap
	pbOther // read by decoding
)

type pbField struct {
	name      string // the JSON name; "" for an inlined struct
	num       int    // the protobuf field number; 0 when the field is not in protobuf
	kind      pbKind
	bits32    bool
	pointer   bool
	repeated  bool // a slice (not []byte)
	omitEmpty bool // omitempty or omitzero: a zero scalar is left out of the map
	typeMeta  bool // the inlined TypeMeta, which protobuf does not carry
	typ       reflect.Type
	val       *pbField // a map's values
}

type pbFields struct {
	fields []pbField
}

var (
	descriptors  sync.Map // reflect.Type -> *pbFields
	timeType     = reflect.TypeFor[metav1.Time]()
	quantityType = reflect.TypeFor[resource.Quantity]()
	intstrType   = reflect.TypeFor[intstr.IntOrString]()
	typeMetaType = reflect.TypeFor[metav1.TypeMeta]()
	// Types that convert themselves (their own ToUnstructured or MarshalJSON) are read by
	// decoding, but for the three above, whose conversion the reader repeats.
	marshalerType = reflect.TypeFor[json.Marshaler]()
	convertType   = reflect.TypeFor[interface{ ToUnstructured() any }]()
	convertErType = reflect.TypeFor[interface{ ToUnstructuredWithError() (any, error) }]()
)

func describe(t reflect.Type) *pbFields {
	if m, ok := descriptors.Load(t); ok {
		return m.(*pbFields)
	}
	m := &pbFields{}
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		f := pbField{}
		// The converter's naming (runtime.fieldInfoFromField, Go < 1.27): the tag's name, the
		// Go name when it has none, and inlined when an embedded field has none.
		tag, hasTag := sf.Tag.Lookup("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue // the converter skips it, "-," included
		}
		switch {
		case !hasTag || tag == "":
			if !sf.Anonymous {
				name = sf.Name
			}
		case name == "" && !sf.Anonymous:
			name = sf.Name
		}
		f.name = name
		omitZero := false
		for _, o := range strings.Split(opts, ",") {
			f.omitEmpty = f.omitEmpty || o == "omitempty" || o == "omitzero"
			omitZero = omitZero || o == "omitzero"
		}
		if pb := sf.Tag.Get("protobuf"); pb != "" {
			if parts := strings.Split(pb, ","); len(parts) > 1 {
				f.num, _ = strconv.Atoi(parts[1])
			}
		}
		ft := sf.Type
		if f.name == "" && ft == typeMetaType {
			f.typeMeta, f.kind = true, pbOther
			m.fields = append(m.fields, f)
			continue
		}
		if ft.Kind() == reflect.Pointer {
			f.pointer, ft = true, ft.Elem()
		}
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() != reflect.Uint8 {
			f.repeated, ft = true, ft.Elem()
		}
		f.typ = ft
		f.kind = kindOf(ft)
		if f.kind == pbMap {
			vt := ft.Elem()
			v := &pbField{typ: vt, kind: kindOf(vt)}
			if vt.Kind() == reflect.Pointer || vt.Kind() == reflect.Slice && vt.Elem().Kind() != reflect.Uint8 {
				v.kind = pbOther
			}
			v.bits32 = vt.Kind() == reflect.Int32 || vt.Kind() == reflect.Uint32
			f.val = v
		}
		f.bits32 = ft.Kind() == reflect.Int32 || ft.Kind() == reflect.Uint32
		switch {
		case f.num == 0, f.name == "" && (f.kind != pbMessage || f.pointer || f.repeated):
			f.kind = pbOther // not in protobuf, or an inlined value the converter merges oddly
		case omitZero && !f.pointer && (f.kind == pbMessage || f.kind == pbQuantity || f.kind == pbIntOrString):
			f.kind = pbOther // left out when zero, which the bytes do not tell
		}
		m.fields = append(m.fields, f)
	}
	actual, _ := descriptors.LoadOrStore(t, m)
	return actual.(*pbFields)
}

func kindOf(t reflect.Type) pbKind {
	switch t {
	case timeType:
		return pbTime
	case quantityType:
		return pbQuantity
	case intstrType:
		return pbIntOrString
	}
	pt := reflect.PointerTo(t)
	if pt.Implements(marshalerType) || pt.Implements(convertType) || pt.Implements(convertErType) {
		return pbOther
	}
	switch t.Kind() {
	case reflect.String:
		return pbString
	case reflect.Bool:
		return pbBool
	case reflect.Int, reflect.Int32, reflect.Int64:
		return pbInt
	case reflect.Uint32, reflect.Uint64:
		return pbUint
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return pbBytes
		}
	case reflect.Struct:
		return pbMessage
	case reflect.Map:
		if t.Key().Kind() == reflect.String {
			return pbMap
		}
	}
	return pbOther
}

// resolve finds the field a JSON name means in m: a field of its own, or of a struct
// inlined in it (hops are the inlined fields stepped through). ok is false when the
// name means nothing; unsure when it may mean more than one field, or a field the
// reader does not know how to reach.
func (m *pbFields) resolve(name string) (hops []*pbField, f *pbField, ok, unsure bool) {
	for i := range m.fields {
		fi := &m.fields[i]
		var h []*pbField
		var g *pbField
		switch {
		case fi.name != "" && fi.name == name:
			g = fi
		case fi.typeMeta && (name == "kind" || name == "apiVersion"):
			g = fi
		case fi.name == "" && fi.kind == pbMessage:
			sub, sf, found, u := describe(fi.typ).resolve(name)
			if u {
				return nil, nil, false, true
			}
			if !found {
				continue
			}
			h, g = append([]*pbField{fi}, sub...), sf
		case fi.name == "" && !fi.typeMeta:
			return nil, nil, false, true // an inlined field the reader cannot enter
		default:
			continue
		}
		if f != nil {
			return nil, nil, false, true // two fields of one name: the converter's last wins
		}
		hops, f = h, g
	}
	return hops, f, f != nil, false
}

type planOp uint8

const (
	opConst      planOp = iota // "" whatever the object
	opKind                     // the object's kind
	opAPIVersion               // the object's apiVersion
	opProto                    // walk the protobuf
	opJSON                     // walk the JSON
	opDecode                   // decode the object
)

// fieldPlan is what a reader does for one path of one resource's objects.
type fieldPlan struct {
	op    planOp
	steps []pbStep // opProto
	segs  []string // opJSON
}

// pbStep is one field stepped into; the last one is the value read.
type pbStep struct {
	f   *pbField
	key string // for a map: the entry's key
}

var (
	constPlan  = &fieldPlan{op: opConst}
	decodePlan = &fieldPlan{op: opDecode}
)

// compileProto plans path segs in objects of Go type t.
func compileProto(t reflect.Type, segs []string) *fieldPlan {
	p := &fieldPlan{op: opProto}
	m := describe(t)
	for i := 0; i < len(segs); i++ {
		last := i == len(segs)-1
		hops, f, ok, unsure := m.resolve(segs[i])
		switch {
		case unsure:
			return decodePlan
		case !ok:
			return constPlan // no such field
		case f.typeMeta:
			// kind and apiVersion of the object itself: Decode sets them from the
			// resource's GroupVersionKind. Elsewhere protobuf does not carry them.
			switch {
			case i > 0 || len(hops) > 0:
				return decodePlan
			case !last:
				return constPlan // through a string
			case segs[0] == "kind":
				return &fieldPlan{op: opKind}
			}
			return &fieldPlan{op: opAPIVersion}
		}
		for _, h := range hops {
			p.steps = append(p.steps, pbStep{f: h})
		}
		switch {
		case f.kind == pbOther:
			return decodePlan
		case f.repeated:
			return constPlan // a list, or through one
		case f.kind == pbMessage:
			if last {
				return constPlan // a map in the unstructured form
			}
			p.steps = append(p.steps, pbStep{f: f})
			m = describe(f.typ)
			continue
		case f.kind == pbMap:
			if last {
				return constPlan
			}
			i++
			p.steps = append(p.steps, pbStep{f: f, key: segs[i]})
			switch {
			case f.val.kind == pbOther:
				return decodePlan
			case f.val.kind == pbMessage:
				if i == len(segs)-1 {
					return constPlan
				}
				m = describe(f.val.typ)
				continue
			case i != len(segs)-1:
				return constPlan // through a scalar
			}
			return p
		case !last:
			return constPlan // through a scalar
		}
		p.steps = append(p.steps, pbStep{f: f})
		return p
	}
	return constPlan // an empty path
}

// pbValue is one field's value as found: its varint, or its bytes.
type pbValue struct {
	present bool
	varint  uint64
	bytes   []byte
}

// readProto follows p's steps in the reader's object; ok is false when the bytes are not
// what the plan expects (the caller decodes instead).
func (r *FieldReader) readProto(p *fieldPlan) (string, bool) {
	data := r.raw
	for i, st := range p.steps {
		f := st.f
		if f.kind == pbMap {
			v, found, ok := mapEntry(data, f.num, st.key, f.val)
			switch {
			case !ok:
				return "", false
			case !found:
				return "", true
			case f.val.kind == pbMessage:
				data = v.bytes
				continue
			}
			return r.format(f.val, v)
		}
		v, ok := lastOccurrence(data, f.num, f.kind)
		if !ok {
			return "", false
		}
		if i < len(p.steps)-1 { // a message to step into
			if !v.present && f.pointer {
				return "", true // nil: the path ends here
			}
			data = v.bytes // an absent value is the zero struct: empty bytes
			continue
		}
		if !v.present && f.pointer {
			return "", true
		}
		return r.format(f, v)
	}
	return "", true
}

// format prints a leaf value as fmt.Sprint prints its unstructured form.
func (r *FieldReader) format(f *pbField, v pbValue) (string, bool) {
	switch f.kind {
	case pbString:
		return view(v.bytes), true
	case pbBool:
		if v.varint == 0 {
			if f.omitEmpty && !f.pointer {
				return "", true
			}
			return "false", true
		}
		return "true", true
	case pbInt, pbUint:
		if v.varint == 0 && f.omitEmpty && !f.pointer {
			return "", true
		}
		start := len(r.out)
		switch {
		case f.kind == pbInt && f.bits32:
			r.out = strconv.AppendInt(r.out, int64(int32(v.varint)), 10)
		case f.kind == pbInt:
			r.out = strconv.AppendInt(r.out, int64(v.varint), 10)
		case f.bits32:
			r.out = strconv.AppendUint(r.out, uint64(uint32(v.varint)), 10)
		case v.varint > math.MaxInt64:
			return "", false // the converter fails on it
		default:
			r.out = strconv.AppendUint(r.out, v.varint, 10)
		}
		return view(r.out[start:]), true
	case pbBytes:
		if len(v.bytes) == 0 {
			return "", true
		}
		start := len(r.out)
		r.out = base64.StdEncoding.AppendEncode(r.out, v.bytes)
		return view(r.out[start:]), true
	case pbTime:
		if len(v.bytes) == 0 {
			return "", true // the zero time converts to null
		}
		secs, ok := timestampSeconds(v.bytes)
		if !ok {
			return "", false
		}
		start := len(r.out)
		r.out = time.Unix(secs, 0).UTC().AppendFormat(r.out, time.RFC3339)
		return view(r.out[start:]), true
	case pbQuantity:
		var q resource.Quantity
		if v.present {
			if err := q.Unmarshal(v.bytes); err != nil {
				return "", false
			}
		}
		return q.String(), true
	case pbIntOrString:
		return r.intOrString(v.bytes)
	}
	return "", false
}

// timestampSeconds reads a protobuf Timestamp's seconds, as metav1.Time decodes it
// (without its nanoseconds).
func timestampSeconds(b []byte) (int64, bool) {
	var secs int64
	for i := 0; i < len(b); {
		tag, j, ok := uvarint(b, i)
		if !ok || tag&7 != 0 {
			return 0, false
		}
		v, k, ok := uvarint(b, j)
		if !ok {
			return 0, false
		}
		if tag>>3 == 1 {
			secs = int64(v)
		}
		i = k
	}
	return secs, true
}

// intOrString reads an intstr.IntOrString (type 1, intVal 2, strVal 3) as its JSON reads
// back: a number, or a string.
func (r *FieldReader) intOrString(b []byte) (string, bool) {
	var typ, num uint64
	var str []byte
	for i := 0; i < len(b); {
		tag, j, ok := uvarint(b, i)
		if !ok {
			return "", false
		}
		switch tag & 7 {
		case 0:
			v, k, ok := uvarint(b, j)
			if !ok {
				return "", false
			}
			switch tag >> 3 {
			case 1:
				typ = v
			case 2:
				num = v
			}
			i = k
		case 2:
			n, k, ok := uvarint(b, j)
			if !ok || n > uint64(len(b)-k) {
				return "", false
			}
			if tag>>3 == 3 {
				str = b[k : k+int(n)]
			}
			i = k + int(n)
		default:
			return "", false
		}
	}
	switch intstr.Type(typ) {
	case intstr.Int:
		start := len(r.out)
		r.out = strconv.AppendInt(r.out, int64(int32(num)), 10)
		return view(r.out[start:]), true
	case intstr.String:
		if !utf8.Valid(str) {
			return "", false // its JSON round trip replaces invalid bytes
		}
		return view(str), true
	}
	return "", false // the converter fails on it
}

func uvarint(b []byte, i int) (uint64, int, bool) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if i >= len(b) {
			return 0, 0, false
		}
		c := b[i]
		i++
		v |= uint64(c&0x7F) << shift
		if c < 0x80 {
			return v, i, true
		}
	}
	return 0, 0, false
}

// next reads the field at b[i]: its number and wire type, its value (a varint, or the
// bytes of a length-delimited field) and where the next field starts; ok is false on
// bytes the reader does not expect.
func next(b []byte, i int) (num int, wt uint64, v pbValue, j int, ok bool) {
	tag, i, ok := uvarint(b, i)
	if !ok {
		return 0, 0, v, 0, false
	}
	num, wt, v.present = int(tag>>3), tag&7, true
	switch wt {
	case 0:
		v.varint, i, ok = uvarint(b, i)
	case 1:
		i, ok = i+8, i+8 <= len(b)
	case 2:
		var n uint64
		if n, i, ok = uvarint(b, i); ok && n <= uint64(len(b)-i) {
			v.bytes, i = b[i:i+int(n)], i+int(n)
		} else {
			ok = false
		}
	case 5:
		i, ok = i+4, i+4 <= len(b)
	default:
		ok = false
	}
	return num, wt, v, i, ok
}

// lastOccurrence finds field num in a message's bytes. A field that is not a list appears
// once; appearing more often (which the generated decoder would merge) is not ok, nor is
// a wire type that does not fit kind.
func lastOccurrence(b []byte, num int, kind pbKind) (pbValue, bool) {
	var found pbValue
	for i := 0; i < len(b); {
		n, wt, v, j, ok := next(b, i)
		if !ok {
			return pbValue{}, false
		}
		i = j
		if n != num {
			continue
		}
		if found.present || wt != wireType(kind) {
			return pbValue{}, false
		}
		found = v
	}
	return found, true
}

func wireType(k pbKind) uint64 {
	switch k {
	case pbBool, pbInt, pbUint:
		return 0
	}
	return 2
}

// mapEntry finds the entry with key in the map field num of a message's bytes (each
// entry a message of key 1 and value 2; a later entry of the same key wins, as in the
// generated decoder). An entry without a value has the value's zero value.
func mapEntry(b []byte, num int, key string, val *pbField) (v pbValue, found, ok bool) {
	for i := 0; i < len(b); {
		n, wt, e, j, ok := next(b, i)
		if !ok {
			return pbValue{}, false, false
		}
		i = j
		if n != num {
			continue
		}
		if wt != 2 {
			return pbValue{}, false, false
		}
		var k, value pbValue
		for x := 0; x < len(e.bytes); {
			fn, fwt, fv, y, ok := next(e.bytes, x)
			if !ok {
				return pbValue{}, false, false
			}
			x = y
			switch {
			case fn == 1 && fwt == 2:
				k = fv
			case fn == 2 && fwt == wireType(val.kind):
				value = fv
			case fn == 1 || fn == 2:
				return pbValue{}, false, false
			}
		}
		if view(k.bytes) == key {
			v, found = value, true
		}
	}
	return v, found, true
}

// The JSON side, for objects kept as JSON (custom resources): the stored JSON is what
// encoding/json wrote, and the unstructured form is what decoding it gives (numbers as
// int64 when they are integers, float64 otherwise).

// readJSON follows segs in the reader's object; ok is false when the JSON is not what
// the reader expects (the caller decodes instead).
func (r *FieldReader) readJSON(segs []string) (string, bool) {
	data := r.raw
	for i, seg := range segs {
		v, found, ok := jsonMember(data, seg, i == 0)
		if !ok {
			return "", false
		}
		if !found {
			return "", true
		}
		if i < len(segs)-1 {
			if v[0] != '{' {
				return "", true // null ends the path; anything else cannot be followed
			}
			data = v
			continue
		}
		return r.jsonScalar(v)
	}
	return "", true
}

// jsonScalar prints a JSON value as fmt.Sprint prints it decoded.
func (r *FieldReader) jsonScalar(v []byte) (string, bool) {
	switch v[0] {
	case '{', '[', 'n':
		return "", true
	case 't':
		return "true", true
	case 'f':
		return "false", true
	case '"':
		return jsonString(v)
	}
	if n, err := strconv.ParseInt(view(v), 10, 64); err == nil {
		start := len(r.out)
		r.out = strconv.AppendInt(r.out, n, 10)
		return view(r.out[start:]), true
	}
	f, err := strconv.ParseFloat(view(v), 64)
	if err != nil {
		return "", false
	}
	return fmt.Sprint(f), true
}

// jsonString unquotes a JSON string token.
func jsonString(tok []byte) (string, bool) {
	inner := tok[1 : len(tok)-1]
	for _, c := range inner {
		if c == '\\' || c < 0x20 {
			var s string
			if err := json.Unmarshal(tok, &s); err != nil {
				return "", false
			}
			return s, true
		}
	}
	if !utf8.Valid(inner) {
		return "", false
	}
	return view(inner), true
}

// jsonMember returns the value of key in the JSON object b. The stored JSON is what
// encoding/json wrote for a map, so each key is there once and the search ends at it. At
// the top, the object must have a non-empty string kind, as decoding requires.
func jsonMember(b []byte, key string, top bool) (v []byte, found, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false, false
	}
	i = skipSpace(b, i+1)
	hasKind := !top
	if i < len(b) && b[i] == '}' {
		return nil, false, hasKind
	}
	for i < len(b) {
		end, ok := skipString(b, i)
		if !ok {
			return nil, false, false
		}
		k := b[i:end]
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return nil, false, false
		}
		i = skipSpace(b, i+1)
		vend, ok := skipValue(b, i)
		if !ok {
			return nil, false, false
		}
		name, ok := jsonString(k)
		if !ok {
			return nil, false, false
		}
		if name == key {
			v, found = b[i:vend], true
		}
		if top && name == "kind" {
			hasKind = b[i] == '"' && vend-i > 2
		}
		if found && hasKind {
			return v, true, true
		}
		i = skipSpace(b, vend)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			return v, found, hasKind
		}
		return nil, false, false
	}
	return nil, false, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the end of the string token at b[i].
func skipString(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return 0, false
	}
	for i++; i <= len(b); {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return 0, false
		}
		q += i
		for i <= q { // the escapes before the quote; the quote may be one of them
			esc := bytes.IndexByte(b[i:q], '\\')
			if esc < 0 {
				return q + 1, true
			}
			i += esc + 2 // past the escaped character
		}
	}
	return 0, false
}

// skipValue returns the end of the JSON value at b[i].
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				end, ok := skipString(b, i)
				if !ok {
					return 0, false
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1, true
				}
			}
		}
		return 0, false
	}
	start := i
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\n' && b[i] != '\t' && b[i] != '\r' {
		i++
	}
	return i, i > start
}
