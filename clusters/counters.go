package clusters

import (
	"sort"
	"time"
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
	// snap is the last snapshot, until the next observation: status is read far more
	// often than an idle resource observes anything (one status read per cluster list,
	// scrape and readiness check; 13,000 resources at 1,000 clusters).
	snap *Histogram
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	i := sort.SearchFloat64s(h.bounds, v)
	h.counts[i]++
	h.count++
	h.sum += v
	h.snap = nil
}

// snapshot returns the histogram's state; its Buckets map is shared with other
// snapshots and must not be modified.
func (h *histogram) snapshot() Histogram {
	if h.snap != nil {
		return *h.snap
	}
	s := Histogram{Buckets: make(map[float64]uint64, len(h.bounds)), Count: h.count, Sum: h.sum}
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i]
		s.Buckets[b] = cum
	}
	h.snap = &s
	return s
}

// Bucket bounds, in seconds.
var (
	// LagBuckets cover sync lag: milliseconds to tens of milliseconds for a busy resource
	// on a healthy cluster, up to the idle proof interval for an idle one, minutes when a
	// watch is stalled.
	LagBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	// ListBuckets cover list calls, from a handful of objects to hundreds of thousands.
	ListBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}
)

// Counters are one informer's cumulative observations since it started. Its maps
// (Events, the histograms' Buckets) are shared by the snapshots taken until the next
// observation: read them, never modify them.
type Counters struct {
	Lists, ListErrors        uint64
	Relists                  uint64 // lists after the first successful one (410 Gone, errors)
	WatchStarts, WatchErrors uint64 // watch calls that failed, and ERROR events
	Events                   map[string]uint64
	ListDuration             Histogram
	// WatchListFallbacks counts the watch-list streams the apiserver refused (it does not
	// serve them), after each of which the informer listed instead; not errors.
	WatchListFallbacks uint64
	// SyncLag has one observation per freshness probe: the time from sending the probe
	// until the cache reached the revision it returned.
	SyncLag             Histogram
	LastBookmarkTime    *time.Time
	InitialSyncDuration time.Duration // 0 until synced
	ResourceVersionLag  int64         // newest probed revision minus the cache's, >= 0
	Probed              bool          // some probe answered
}

// counters is the mutable form, guarded by resourceCache.mu.
type counters struct {
	lists, listErrors, relists, watchStarts, watchErrors uint64
	watchListFallbacks, successfulLists                  uint64
	events                                               map[string]uint64
	eventsSnap                                           map[string]uint64 // copy of events until the next one
	listDuration                                         *histogram
	lastBookmark                                         time.Time
	started                                              time.Time
	initialSyncDuration                                  time.Duration
}

func newCounters(now time.Time) counters {
	return counters{
		events:       map[string]uint64{},
		listDuration: newHistogram(ListBuckets),
		started:      now,
	}
}

func (c *counters) snapshot(p *proof) Counters {
	s := Counters{
		Lists: c.lists, ListErrors: c.listErrors, Relists: c.relists, WatchStarts: c.watchStarts, WatchErrors: c.watchErrors,
		WatchListFallbacks: c.watchListFallbacks, Events: c.eventsSnapshot(), ListDuration: c.listDuration.snapshot(),
		SyncLag: p.syncLag.snapshot(), LastBookmarkTime: timePtr(c.lastBookmark), InitialSyncDuration: c.initialSyncDuration,
		ResourceVersionLag: p.revisionLag(), Probed: p.probedRV > 0,
	}
	return s
}

// countEvent counts one watch event of type t.
func (c *counters) countEvent(t string) {
	c.events[t]++
	c.eventsSnap = nil
}

// eventsSnapshot is a copy of the event counts, shared until the next event: it must not
// be modified.
func (c *counters) eventsSnapshot() map[string]uint64 {
	if c.eventsSnap == nil {
		c.eventsSnap = make(map[string]uint64, len(c.events))
		for k, v := range c.events {
			c.eventsSnap[k] = v
		}
	}
	return c.eventsSnap
}
