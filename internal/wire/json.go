package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/fleetcache/fleetcache/aggregator"
)

// ClusterAnnotation carries an object's cluster in every object fleetcache serves.
const ClusterAnnotation = "fleetcache.io/cluster"

// protoBufs hold cached objects' protobuf while it is transcoded, for objects the cache
// keeps compressed.
var protoBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// encoders are reusable JSON encoders writing into their own buffer.
var encoders = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = json.NewEncoder(&e.buf)
	return e
}}

type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

// AppendObject appends the item's object as JSON to dst, with the annotation
// fleetcache.io/cluster. The object is decoded into a private copy; the cache is never
// modified.
func AppendObject(dst []byte, it aggregator.Item) ([]byte, error) {
	if out, ok := transcode(dst, it, it.Cluster); ok {
		return out, nil
	}
	return DecodeAndAppendObject(dst, it)
}

// transcode writes a built-in object's JSON straight from its protobuf (see
// protojson.go); ok is false when it must be decoded instead.
func transcode(dst []byte, it aggregator.Item, cluster string) ([]byte, bool) {
	bp := protoBufs.Get().(*[]byte)
	defer protoBufs.Put(bp)
	raw, typ, gvk, ok, err := it.Object.Protobuf(*bp)
	if !ok || err != nil {
		return dst, false
	}
	if _, compressed := it.Object.StoredSize(); compressed {
		*bp = raw[:0] // raw is the buffer's (perhaps grown) storage, not the object's
	}
	out, err := appendProtoJSON(dst, raw, typ, gvk, cluster)
	if err != nil {
		return dst, false // partial output past len(dst) is overwritten
	}
	return out, true
}

// DecodeAndAppendObject is AppendObject by way of a decoded object and encoding/json:
// the slow path, for custom resources and whatever the transcoder does not handle.
func DecodeAndAppendObject(dst []byte, it aggregator.Item) ([]byte, error) {
	obj, err := it.Object.Decode()
	if err != nil {
		return dst, err
	}
	if err := annotate(obj, it); err != nil {
		return dst, err
	}
	return appendJSON(dst, obj)
}

// AppendPlainObject appends the item's object as JSON to dst, as it is cached (the
// /api/v1 answers carry the cluster beside the object).
func AppendPlainObject(dst []byte, it aggregator.Item) ([]byte, error) {
	if out, ok := transcode(dst, it, ""); ok {
		return out, nil
	}
	obj, err := it.Object.Decode()
	if err != nil {
		return dst, err
	}
	return appendJSON(dst, obj)
}

func annotate(obj runtime.Object, it aggregator.Item) error {
	m, err := meta.Accessor(obj)
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", it.Object.Namespace, it.Object.Name, err)
	}
	ann := m.GetAnnotations()
	if ann == nil {
		ann = make(map[string]string, 1)
	}
	ann[ClusterAnnotation] = it.Cluster
	m.SetAnnotations(ann)
	return nil
}

// appendJSON appends v as encoding/json writes it (HTML-escaped, no trailing newline).
func appendJSON(dst []byte, v any) ([]byte, error) {
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	e.buf.Reset()
	if err := e.enc.Encode(v); err != nil {
		return dst, err
	}
	b := e.buf.Bytes()
	return append(dst, b[:len(b)-1]...), nil // Encode ends with a newline
}

const hex = "0123456789abcdef"

// htmlSafe are the ASCII bytes a JSON string holds as they are (encoding/json's
// htmlSafeSet): printable, and neither a quote, a backslash nor <, > or &.
var htmlSafe = func() (set [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		set[b] = b != '"' && b != '\\' && b != '<' && b != '>' && b != '&'
	}
	return set
}()

// AppendString appends s as a JSON string exactly as encoding/json writes it: HTML
// characters, control characters, U+2028 and U+2029 escaped, invalid UTF-8 replaced.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if htmlSafe[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendTime appends a metav1.Time as JSON: RFC 3339 in UTC to the second, null if zero.
func appendTime(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(dst, "null"...)
	}
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, time.RFC3339)
	return append(dst, '"')
}

// appendStringMap appends a map[string]string as encoding/json does: keys sorted.
func appendStringMap(dst []byte, m map[string]string, extraKey, extraValue string) []byte {
	var buf [16]string // labels are few: no allocation per row
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	if extraKey != "" {
		if _, ok := m[extraKey]; !ok {
			keys = append(keys, extraKey)
		}
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendString(dst, k)
		dst = append(dst, ':')
		if k == extraKey {
			dst = AppendString(dst, extraValue)
		} else {
			dst = AppendString(dst, m[k])
		}
	}
	return append(dst, '}')
}

// appendCell appends one table cell: a string, or a number for integer cells.
func appendInt(dst []byte, s string) []byte {
	if _, err := strconv.ParseInt(s, 10, 64); err != nil {
		return AppendString(dst, s)
	}
	return append(dst, s...)
}
