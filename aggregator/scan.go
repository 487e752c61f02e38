package aggregator

import (
	"context"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/google/btree"

	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/cores"
)

// Scans: a query that no index answers visits every object of a shard, and one that
// must read a field no index holds reads it from each object's bytes. At a million
// objects that takes a second or more, and it must never hold the shard's lock: the
// cluster's informer waits for that lock to store every change (ingest), and behind a
// waiting writer every other reader of the shard queues too.
//
// So a scan reads a view of the shard taken under its read lock in O(1) or in a bounded
// number of steps (shardView): a copy-on-write snapshot of the shard's tree (btree's
// Clone: the shard's next writes copy the nodes they change, the snapshot keeps the old
// ones), or the entries an index selects (at most a quarter of the shard). It then
// evaluates every entry without any lock: entries are never modified once stored (a
// change stores a new entry), nor are the objects they point at (clusters.Object is
// immutable), so reading them races with nothing. The answer is still each cluster's
// state at one moment, the moment the view was taken.
//
// A scan looks at its context every scanChunk entries, so a request whose client has
// gone stops within a chunk, and steps aside for other goroutines there (as the wire
// encoders do after every batch), so that an informer storing a change, or a cheap
// request that just arrived, waits for a chunk rather than for the scheduler's 10 ms time
// slice.

// scanChunk is how many entries a scan visits between two looks at its context: about
// a millisecond of work when each entry's field is read from its bytes (1-3 µs each), a
// few microseconds when only labels are matched.
const scanChunk = 512

// shardView is what one scan of a shard reads: either the entries an index selects
// (cands, not yet sorted) or a snapshot of the shard's whole tree.
type shardView struct {
	cluster  string
	narrowed bool
	cands    []*entry
	tree     *btree.BTreeG[*entry]
}

// view takes what a scan of q reads. s.mu is held (read or write): the candidates are
// collected from the shard's indexes, or its tree is cloned, both bounded work.
func (s *shard) view(q Query) shardView {
	if cands, ok := s.candidates(q); ok {
		return shardView{cluster: s.cluster, narrowed: true, cands: cands}
	}
	return shardView{cluster: s.cluster, tree: s.snapshot()}
}

// read is view under the shard's read lock.
func (s *shard) read(q Query) shardView {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.view(q)
}

// snapshot returns a copy-on-write clone of the shard's tree. s.mu is held (read or
// write). A clone changes the tree's copy-on-write context, so two clones must not run
// at once: readers that hold s.mu only for reading take cloneMu (lock order: shard.mu,
// then cloneMu). Writers hold s.mu exclusively.
func (s *shard) snapshot() *btree.BTreeG[*entry] {
	s.cloneMu.Lock()
	defer s.cloneMu.Unlock()
	return s.tree.Clone()
}

// scan calls fn for each entry of the view that em matches, with key > after, in key
// order, until fn returns false. No lock is held (see above). It returns ctx's error
// when ctx ends first; pace says what the scan does between chunks.
func (v *shardView) scan(q Query, em *entryMatcher, after string, pace *pacer, fn func(*entry) bool) error {
	err := pace.ctx.Err()
	if err != nil {
		return err
	}
	visited := 0
	visit := func(e *entry) bool {
		if visited++; visited%scanChunk == 0 {
			if err = pace.pause(); err != nil {
				return false
			}
		}
		if e.key <= after || !em.matches(e) {
			return true
		}
		return fn(e)
	}
	if v.narrowed {
		sort.Slice(v.cands, func(i, j int) bool { return v.cands[i].key < v.cands[j].key })
		for _, e := range v.cands {
			if !visit(e) {
				break
			}
		}
		return err
	}
	start, end := after, ""
	if q.Namespace != "" {
		prefix := q.Namespace + "/"
		if start < prefix {
			start = prefix
		}
		end = q.Namespace + "0" // '0' follows '/'
	}
	if end != "" {
		v.tree.AscendRange(&entry{key: start}, &entry{key: end}, visit)
	} else {
		v.tree.AscendGreaterOrEqual(&entry{key: start}, visit)
	}
	return err
}

// pacer is what a scan does between two chunks: it looks at the request's context and
// steps aside for other goroutines.
type pacer struct {
	ctx context.Context
}

func (p *pacer) pause() error {
	if err := p.ctx.Err(); err != nil {
		return err
	}
	runtime.Gosched()
	return nil
}

// parkInterval is how long a scanning goroutine that may not run waits before it asks
// again, as wire's encoders do.
const parkInterval = 200 * time.Microsecond

// awaitCore returns once the request's goroutine number worker (from 1) may run
// (cores.Allowed: the server narrows an expensive request to one core while cheaper ones
// run), with false once there is no work left for it (left) or ctx has ended. It is
// asked between units of work, never while holding one: the request's first goroutine
// always runs, and does the work the others may not.
func awaitCore(ctx context.Context, worker int, left func() bool) bool {
	var park *time.Timer
	defer func() {
		if park != nil {
			park.Stop()
		}
	}()
	for {
		if ctx.Err() != nil || !left() {
			return false
		}
		if worker < cores.Allowed(ctx) {
			return true
		}
		if park == nil {
			park = time.NewTimer(parkInterval)
		} else {
			park.Reset(parkInterval)
		}
		select {
		case <-ctx.Done():
		case <-park.C:
		}
	}
}

// objectFields lets apimachinery's field selectors read any field path of an object:
// metadata from the decoded part, indexed fields from the index values, anything else
// from the object's stored bytes (clusters.FieldReader: a few microseconds, where
// decoding the object took about a hundred).
type objectFields struct {
	obj *clusters.Object
	r   *clusters.FieldReader
}

// decodeFields makes field selectors and group-bys read fields by decoding each object,
// as they did before clusters.FieldReader: for benchmarks that compare the two.
var decodeFields = false

func (f *objectFields) Has(string) bool { return true }

// Get returns the field's value; a value read from the object's bytes is valid until
// the reader reads another object.
func (f *objectFields) Get(path string) string {
	switch path {
	case "metadata.name":
		return f.obj.Name
	case "metadata.namespace":
		return f.obj.Namespace
	}
	if f.obj.HasIndex(path) {
		if v, ok := f.obj.Field(path); ok {
			return v
		}
	}
	if decodeFields {
		return f.r.ValueDecoded(f.obj, path)
	}
	return f.r.Value(f.obj, path)
}

// readers lend field readers to evaluations outside a scan (a watcher's matcher, called
// by every shard's ingest): each call takes its own.
var readers = sync.Pool{New: func() any { return new(clusters.FieldReader) }}
