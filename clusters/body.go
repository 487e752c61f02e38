package clusters

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Bodies: every object's encoded form (protobuf or JSON) is kept compressed with a zstd
// dictionary trained from the first objects of its own resource in its own cluster.
// Objects of one kind share most of their bytes (field names, images, probes, volumes,
// the pod template of their ReplicaSet), so against such a dictionary a 4 KB pod body
// becomes about a hundred bytes, and decompressing it takes 1-2 µs.
//
// Until a resource has shown enough objects to train on, its bodies are stored as they
// are; they stay so (they are at most trainAfter objects per resource and informer run)
// while every later object, and every later version of those, is compressed. A resource
// whose objects do not compress (random data) keeps storing them plainly.

const (
	// trainAfter objects, and at least trainMinBytes of them, are seen before a
	// dictionary is trained: enough to see most of a kind's structure, few enough that
	// the plainly stored ones cost little.
	trainAfter    = 128
	trainMinBytes = 32 << 10
	// dictMaxBytes bounds a dictionary's content: one per resource and cluster, and the
	// gain from 16 KiB to 64 KiB was 95 -> 82 bytes per realistic pod.
	dictMaxBytes = 64 << 10
	// usefulRatio: a dictionary is used only if samples it was not built from compress
	// to at most this fraction of their size.
	usefulRatio = 0.75
	// encoderWindow is how far back a match may reach, the dictionary included: more
	// than a dictionary and a typical object, and small, as each encoder's history
	// buffers take twice this.
	encoderWindow = 256 << 10
)

// dictionary is one trained zstd dictionary with what encodes and decodes against it:
// about 90 KB per trained resource and cluster (its content and a decoder). Encoders are
// pooled, so that an idle resource holds none after two garbage collections; the decoder
// is shared and safe for concurrent use.
type dictionary struct {
	id   uint32
	data []byte // zstd dictionary format, or only its content when raw
	raw  bool
	enc  sync.Pool
	dec  *zstd.Decoder
}

func newDictionary(data []byte, id uint32, raw bool) (*dictionary, error) {
	dict := zstd.WithDecoderDicts(data)
	if raw {
		dict = zstd.WithDecoderDictRaw(id, data)
	}
	dec, err := zstd.NewReader(nil, dict, zstd.WithDecoderConcurrency(0), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(256<<20))
	if err != nil {
		return nil, fmt.Errorf("load dictionary: %w", err)
	}
	d := &dictionary{id: id, data: data, raw: raw, dec: dec}
	if _, err := d.encoder(); err != nil { // fail here, not on every object
		return nil, err
	}
	return d, nil
}

func (d *dictionary) encoder() (*zstd.Encoder, error) {
	if e, ok := d.enc.Get().(*zstd.Encoder); ok {
		return e, nil
	}
	dict := zstd.WithEncoderDict(d.data)
	if d.raw {
		dict = zstd.WithEncoderDictRaw(d.id, d.data)
	}
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), dict, zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false), zstd.WithLowerEncoderMem(true),
		// Literals left as they are: a third faster at ingest for 5 % more bytes.
		zstd.WithWindowSize(encoderWindow), zstd.WithNoEntropyCompression(true))
	if err != nil {
		return nil, fmt.Errorf("make encoder: %w", err)
	}
	return e, nil
}

// compress returns raw compressed, in a slice of its own of exactly its length.
func (d *dictionary) compress(raw []byte) ([]byte, error) {
	e, err := d.encoder()
	if err != nil {
		return nil, err
	}
	bp := scratch.Get().(*[]byte)
	out := e.EncodeAll(raw, (*bp)[:0])
	d.enc.Put(e)
	c := make([]byte, len(out))
	copy(c, out)
	*bp = out
	scratch.Put(bp)
	return c, nil
}

// decompress appends the decompressed body to dst.
func (d *dictionary) decompress(dst, body []byte) ([]byte, error) {
	out, err := d.dec.DecodeAll(body, dst)
	if err != nil {
		return dst, fmt.Errorf("decompress body: %w", err)
	}
	return out, nil
}

// scratch holds buffers for compressing and for decoding compressed bodies.
var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// trainer collects one resource's first bodies and trains its dictionary from them. Safe
// for concurrent use (an informer calls it from one goroutine; the Compactor from any).
type trainer struct {
	mu      sync.Mutex
	samples []sample
	bytes   int
	seen    int
	done    bool // trained, or gave up
	dict    *dictionary
}

// sample is one plainly stored body and the flattened labels of its object, which say
// which objects are alike (pods of one ReplicaSet).
type sample struct {
	body   []byte
	labels string
}

// current returns the dictionary to compress with, or nil while there is none.
func (t *trainer) current() *dictionary {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dict
}

// observe records a body stored plainly; once enough have been seen it trains the
// dictionary later objects use. body is shared, never modified.
func (t *trainer) observe(body []byte, labels string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return
	}
	t.seen++
	if t.bytes < 4*dictMaxBytes {
		t.samples = append(t.samples, sample{body, labels})
		t.bytes += len(body)
	}
	if t.seen < trainAfter || t.bytes < trainMinBytes {
		return
	}
	t.done = true
	t.dict, _ = train(t.samples) // no dictionary: bodies stay plain
	t.samples = nil
}

// errNotUseful says the samples do not compress well enough for a dictionary to pay.
var errNotUseful = errors.New("samples do not compress")

// train builds a dictionary whose content is whole sample bodies, one of each kind of
// object first (by label set), then the others, up to dictMaxBytes; zstd then finds in
// it the long runs a new object shares with one like it. The entropy tables come from
// compressing every sample against that content.
func train(samples []sample) (*dictionary, error) {
	// Every fourth sample is held out of the content, to check the dictionary on objects
	// it has not seen.
	seen := map[string]bool{}
	var first, rest, held [][]byte
	for i, s := range samples {
		switch {
		case i%4 == 3:
			held = append(held, s.body)
		case !seen[s.labels]:
			seen[s.labels] = true
			first = append(first, s.body)
		default:
			rest = append(rest, s.body)
		}
	}
	var content []byte
	for _, b := range append(first, rest...) {
		if len(content)+len(b) > dictMaxBytes {
			continue
		}
		content = append(content, b...)
	}
	if len(content) < 64 || len(held) == 0 {
		return nil, fmt.Errorf("train dictionary: %d bytes of samples: %w", len(content), errNotUseful)
	}
	contents := make([][]byte, len(samples))
	for i, s := range samples {
		contents[i] = s.body
	}
	id := 1 + rand.Uint32N(1<<31-2) // 0 means "no dictionary" in a frame
	// BuildDict adds entropy tables fitted to the samples (faster decoding, a few bytes
	// less per object); it fails when the samples leave it nothing to fit (every sample
	// a copy of another), and the content alone is then the dictionary.
	data, raw := content, true
	if built, err := zstd.BuildDict(zstd.BuildDictOptions{ID: id, Contents: contents, History: content, Offsets: [3]int{1, 4, 8}, Level: zstd.SpeedFastest}); err == nil {
		data, raw = built, false
	}
	d, err := newDictionary(data, id, raw)
	if err != nil {
		return nil, err
	}
	total, compressed := 0, 0
	for _, b := range held {
		out, err := d.compress(b)
		if err != nil {
			return nil, err
		}
		total += len(b)
		compressed += len(out)
	}
	if float64(compressed) > usefulRatio*float64(total) {
		return nil, fmt.Errorf("train dictionary: %d bytes to %d: %w", total, compressed, errNotUseful)
	}
	return d, nil
}
