package clusters

import (
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
)

// Histogram is a fixed-bucket histogram snapshot, for const Prometheus histograms.
type Histogram struct {
	// Buckets maps each upper bound to the cumulative count of observations <= it.
	Buckets map[float64]uint64
	Count   uint64
	Sum     float64
}

// histogram accumulates observations; guarded by its owner's lock.
type histogram struct {
	bounds []float64
	counts []uint64 // per bucket, not cumulative; len(bounds)+1 with +Inf last
	count  uint64
	sum    float64
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	i := sort.SearchFloat64s(h.bounds, v)
	h.counts[i]++
	h.count++
	h.sum += v
}

func (h *histogram) snapshot() Histogram {
	s := Histogram{Buckets: make(map[float64]uint64, len(h.bounds)), Count: h.count, Sum: h.sum}
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i]
		s.Buckets[b] = cum
	}
	return s
}

// Bucket bounds, in seconds.
var (
	// LagBuckets cover event lag and freshness: tens of milliseconds on a healthy
	// cluster, a minute when only bookmarks (about one a minute) move an idle resource on.
	LagBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	// ListBuckets cover list calls, from a handful of objects to hundreds of thousands.
	ListBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}
)

// Counters are one informer's cumulative observations since it started.
type Counters struct {
	Lists, ListErrors          uint64
	Relists                    uint64 // lists after the first successful one (410 Gone, errors)
	WatchStarts, WatchErrors   uint64 // watch calls that failed, and ERROR events
	Events                     map[string]uint64
	ListDuration               Histogram
	EventLag                   Histogram // receive time minus server-side change time
	Freshness                  Histogram // probe -> cache caught up with the probed resourceVersion
	LastBookmarkTime           *time.Time
	InitialSyncDuration        time.Duration // 0 until synced
	ResourceVersionLag         int64         // probed current RV minus the cache's RV, >= 0
	CacheResourceVersion       uint64
	ProbedResourceVersion      uint64
	ProbedResourceVersionKnown bool
}

// counters is the mutable form, guarded by resourceCache.mu.
type counters struct {
	lists, listErrors, relists, watchStarts, watchErrors uint64
	successfulLists                                      uint64
	events                                               map[string]uint64
	listDuration, eventLag, freshness                    *histogram
	lastBookmark                                         time.Time
	started                                              time.Time
	initialSyncDuration                                  time.Duration
	cacheRV, probedRV                                    uint64
	pending                                              []probe // probes the cache has not reached yet
}

type probe struct {
	rv uint64
	at time.Time
}

func newCounters(now time.Time) counters {
	return counters{
		events:       map[string]uint64{},
		listDuration: newHistogram(ListBuckets),
		eventLag:     newHistogram(LagBuckets),
		freshness:    newHistogram(LagBuckets),
		started:      now,
	}
}

func (c *counters) snapshot() Counters {
	s := Counters{
		Lists: c.lists, ListErrors: c.listErrors, Relists: c.relists, WatchStarts: c.watchStarts, WatchErrors: c.watchErrors,
		Events: make(map[string]uint64, len(c.events)), ListDuration: c.listDuration.snapshot(), EventLag: c.eventLag.snapshot(),
		Freshness: c.freshness.snapshot(), LastBookmarkTime: timePtr(c.lastBookmark), InitialSyncDuration: c.initialSyncDuration,
		CacheResourceVersion: c.cacheRV, ProbedResourceVersion: c.probedRV, ProbedResourceVersionKnown: c.probedRV > 0,
	}
	for k, v := range c.events {
		s.Events[k] = v
	}
	if c.probedRV > c.cacheRV {
		s.ResourceVersionLag = int64(c.probedRV - c.cacheRV)
	}
	return s
}

// advance records that the cache now holds rv, and resolves the probes it reached.
func (c *counters) advance(rv uint64, now time.Time) {
	if rv <= c.cacheRV {
		return
	}
	c.cacheRV = rv
	kept := c.pending[:0]
	for _, p := range c.pending {
		if p.rv <= rv {
			c.freshness.observe(now.Sub(p.at).Seconds())
		} else {
			kept = append(kept, p)
		}
	}
	c.pending = kept
}

// maxPendingProbes bounds the probes waiting for a cache that does not move (a stalled
// watch): the oldest are the ones that matter.
const maxPendingProbes = 64

func (c *counters) probed(rv uint64, now time.Time) {
	c.probedRV = rv
	if rv <= c.cacheRV {
		c.freshness.observe(0)
		return
	}
	if len(c.pending) < maxPendingProbes {
		c.pending = append(c.pending, probe{rv: rv, at: now})
	}
}

// changeTime is the server-side time of an object's last change: the newest of its
// managedFields times, its creation and its deletion timestamp. It must be read before
// the object is trimmed. Those times have one-second resolution (RFC 3339), so the true
// change happened during the second after the returned time: the middle of that second
// is returned, which keeps the error within half a second either way.
func changeTime(obj runtime.Object) (time.Time, bool) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return time.Time{}, false
	}
	t := m.GetCreationTimestamp().Time
	for _, f := range m.GetManagedFields() {
		if f.Time != nil && f.Time.After(t) {
			t = f.Time.Time
		}
	}
	if d := m.GetDeletionTimestamp(); d != nil {
		// A graceful deletion's timestamp is the end of its grace period: the request was
		// made that much earlier.
		requested := d.Time
		if g := m.GetDeletionGracePeriodSeconds(); g != nil {
			requested = requested.Add(-time.Duration(*g) * time.Second)
		}
		if requested.After(t) {
			t = requested
		}
	}
	if t.IsZero() {
		return t, false
	}
	return t.Add(500 * time.Millisecond), true
}

// offsetEstimator bounds the apiserver's clock offset from HTTP Date headers, which have
// one-second resolution. Each probe says the server's clock read some time in
// [date, date+1s) while we waited between sent and received, so
// offset ∈ [date - received, date + 1s - sent]. Intersecting the intervals of probes
// taken at different sub-second phases narrows the offset to about the round-trip time.
// The intersection restarts every window probes (and when it becomes empty, after a
// clock step), so drift is followed.
type offsetEstimator struct {
	lo, hi time.Duration
	n      int
	// prev is the last window's estimate, used until the new window has settled.
	prev    time.Duration
	hasPrev bool
}

const (
	offsetWindow  = 60
	offsetSettled = 5
)

func (e *offsetEstimator) add(date, sent, received time.Time) {
	lo, hi := date.Sub(received), date.Add(time.Second).Sub(sent)
	if e.n == 0 || e.n >= offsetWindow || lo > e.hi || hi < e.lo {
		if e.n >= offsetSettled {
			e.prev, e.hasPrev = e.estimate(), true
		}
		e.lo, e.hi, e.n = lo, hi, 0
	}
	e.lo, e.hi = max(e.lo, lo), min(e.hi, hi)
	e.n++
}

func (e *offsetEstimator) estimate() time.Duration {
	if e.n < offsetSettled && e.hasPrev {
		return e.prev
	}
	return (e.lo + e.hi) / 2
}
