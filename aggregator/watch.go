package aggregator

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/glob"
)

// Event is one change in one cluster, as kept in the history and sent to watchers.
type Event struct {
	Type    watch.EventType
	Cluster string
	// RV orders the cluster's events: the object's resourceVersion, or the next number
	// after the previous event when a relist replays an older object.
	RV     uint64
	Object *clusters.Object
	Old    *clusters.Object // for Modified: the previous state
}

// history is a ring of a shard's most recent events. It grows as events come, up to its
// size: a quiet resource (most of a fleet's) costs nothing, where a ring allocated up
// front cost about 230 KB per cluster and resource.
type history struct {
	size   int
	events []Event
	next   int
	full   bool
	// evicted is the RV of the newest event pushed out of the ring: a cursor older than
	// it cannot be served.
	evicted uint64
}

func newHistory(n int) history { return history{size: n} }

func (h *history) add(ev Event) {
	if !h.full && len(h.events) < h.size {
		h.events = append(h.events, ev)
		if len(h.events) == h.size {
			h.full, h.next = true, 0
		}
		return
	}
	h.evicted = h.events[h.next].RV
	h.events[h.next] = ev
	h.next = (h.next + 1) % len(h.events)
}

// since returns the retained events with RV > rv, oldest first; ok is false when events
// after rv were already evicted.
func (h *history) since(rv uint64) (out []Event, ok bool) {
	if h.full && rv < h.evicted {
		return nil, false
	}
	n, start := len(h.events), 0
	if h.full {
		start = h.next
	}
	for i := 0; i < n; i++ {
		ev := h.events[(start+i)%len(h.events)]
		if ev.RV > rv {
			out = append(out, ev)
		}
	}
	return out, true
}

// emit records an event in the shard's history and hands it to the resource's watchers.
// s.mu is held, so watchers see each shard's events in order.
func (r *resourceIndex) emit(s *shard, typ watch.EventType, obj, old *clusters.Object) {
	rv := clusters.ParseResourceVersion(obj.ResourceVersion)
	if rv <= s.lastRV {
		rv = s.lastRV + 1
	}
	s.lastRV = rv
	ev := Event{Type: typ, Cluster: s.cluster, RV: rv, Object: obj, Old: old}
	s.history.add(ev)
	r.wmu.RLock()
	for w := range r.watchers {
		w.offer(ev)
	}
	r.wmu.RUnlock()
}

// translate maps a change to what a watcher of the matcher's selection sees: an object
// that starts or stops matching is ADDED or DELETED, one that never matches is skipped.
func (m matcher) translate(ev Event) (watch.EventType, bool) {
	if ev.Type != watch.Modified {
		return ev.Type, m.matches(ev.Cluster, ev.Object)
	}
	was, is := m.matches(ev.Cluster, ev.Old), m.matches(ev.Cluster, ev.Object)
	switch {
	case was && is:
		return watch.Modified, true
	case was:
		return watch.Deleted, true
	case is:
		return watch.Added, true
	}
	return "", false
}

// WatchItem is the object of a watch event: a cluster-tagged object, or (Object nil) a
// bookmark. Cursor is the position after this event; a watch resumed from it misses
// nothing and repeats nothing.
type WatchItem struct {
	Item
	RV     uint64
	Cursor string
	// InitialEventsEnd marks the bookmark that ends a watch's initial events
	// (WatchOptions.InitialEvents): every selected object was sent before it.
	InitialEventsEnd bool
}

// GetObjectKind implements runtime.Object.
func (w *WatchItem) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object; the cached object stays shared.
func (w *WatchItem) DeepCopyObject() runtime.Object { c := *w; return &c }

type watcher struct {
	m        matcher
	clusters func(string) bool
	in       chan Event
	overflow atomic.Bool
	cancel   context.CancelFunc
}

// offer queues an event for the watcher without ever blocking ingest: a watcher whose
// buffer is full is ended instead.
func (w *watcher) offer(ev Event) {
	if !w.clusters(ev.Cluster) {
		return
	}
	typ, ok := w.m.translate(ev)
	if !ok {
		return
	}
	ev.Type = typ
	select {
	case w.in <- ev:
	default:
		if w.overflow.CompareAndSwap(false, true) {
			w.cancel()
		}
	}
}

// Watch streams the changes to the objects a query selects (Limit and Continue are
// ignored), each tagged with its cluster. Without a cursor it starts now; with one it
// first replays every retained event after it (ErrExpired if the history no longer
// reaches back that far). The first event is a BOOKMARK carrying the starting cursor.
// The stream ends with an ERROR event when the watcher falls behind, and closes when ctx
// ends or Stop is called.
func (ix *Index) Watch(ctx context.Context, q Query, from Cursor) (watch.Interface, error) {
	return ix.WatchWith(ctx, q, WatchOptions{From: from})
}

// WatchOptions say where a watch starts.
type WatchOptions struct {
	// From resumes after a cursor; nil starts now.
	From Cursor
	// InitialEvents starts with the current state instead of a starting BOOKMARK: an
	// ADDED event for every selected object, read from each cluster's index together
	// with its position, then a BOOKMARK with InitialEventsEnd set, then the changes
	// after that position. From is ignored. This is the Kubernetes watch-list protocol
	// (sendInitialEvents=true), which needs no separate list.
	InitialEvents bool
}

// WatchWith is Watch with options.
func (ix *Index) WatchWith(ctx context.Context, q Query, opts WatchOptions) (watch.Interface, error) {
	from := opts.From
	if opts.InitialEvents {
		from = nil
	}
	p, err := ix.plan(q)
	if err != nil {
		return nil, err
	}
	q = p.q
	r := p.resource
	ctx, cancel := context.WithCancel(ctx)
	var only map[string]bool
	if len(q.Only) > 0 {
		only = map[string]bool{}
		for _, c := range q.Only {
			only[c] = true
		}
	}
	w := &watcher{
		m:      newMatcher(q),
		in:     make(chan Event, ix.opts.WatchBuffer),
		cancel: cancel,
		clusters: func(name string) bool {
			if q.Scope != nil && !q.Scope.SeesCluster(name) {
				return false
			}
			if only != nil && !only[name] {
				return false
			}
			return q.Clusters == "" || glob.Match(q.Clusters, name)
		},
	}
	// Register first, then read each shard's history under its lock: an event lands in
	// the replay, in the live buffer, or in both (and is then sent once).
	r.wmu.Lock()
	r.watchers[w] = struct{}{}
	r.wmu.Unlock()
	unregister := func() {
		r.wmu.Lock()
		delete(r.watchers, w)
		r.wmu.Unlock()
	}

	r.mu.RLock()
	for name, rv := range from {
		if last, ok := r.dropped[name]; ok && rv <= last && w.clusters(name) {
			r.mu.RUnlock()
			unregister()
			cancel()
			return nil, fmt.Errorf("%w: cluster %s stopped serving %s and its history was dropped; list again and watch from now", ErrExpired, name, r.name)
		}
	}
	r.mu.RUnlock()
	cursor := Cursor{}
	var replay []Event
	var initial []Item
	pace := &pacer{ctx: ctx}
	for _, s := range p.shards {
		s.mu.RLock()
		start, ok := from[s.cluster]
		if !ok || from == nil {
			start = s.lastRV
		}
		events, kept := s.history.since(start)
		var v shardView
		if opts.InitialEvents {
			// Under the same lock as the position: the view is exactly the state at start,
			// and every later change arrives through the live buffer. It is read once the
			// lock is released.
			v = s.view(q)
		}
		s.mu.RUnlock()
		if !kept {
			unregister()
			cancel()
			return nil, fmt.Errorf("%w: cursor position %d of cluster %s is older than the retained history; list again and watch from now", ErrExpired, start, s.cluster)
		}
		if opts.InitialEvents {
			err := v.scan(q, w.m.forScan(s.cluster), "", pace, func(e *entry) bool {
				initial = append(initial, Item{Cluster: s.cluster, Resource: r.name, Object: e.obj})
				return true
			})
			if err != nil {
				unregister()
				cancel()
				return nil, err
			}
		}
		cursor[s.cluster] = start
		for _, ev := range events {
			if typ, ok := w.m.translate(ev); ok {
				ev.Type = typ
				replay = append(replay, ev)
			}
		}
	}
	for name, rv := range from {
		if _, ok := cursor[name]; !ok && w.clusters(name) {
			cursor[name] = rv // keep positions of clusters that have no objects now
		}
	}

	out := make(chan watch.Event)
	sw := &streamWatch{out: out, cancel: cancel}
	go func() {
		defer close(out)
		defer unregister()
		defer func() {
			if !w.overflow.Load() {
				return
			}
			// The consumer is slow: give it a while to read why. Only this watcher's
			// goroutine waits; ingest and other watchers do not.
			status := &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusGone, Reason: metav1.StatusReasonExpired,
				Message: fmt.Sprintf("watch fell more than %d events behind and was ended; resume from the last cursor", cap(w.in))}
			timer := time.NewTimer(errorDeliveryTimeout)
			defer timer.Stop()
			select {
			case out <- watch.Event{Type: watch.Error, Object: status}:
			case <-timer.C:
			}
		}()
		send := func(ev watch.Event) bool {
			select {
			case out <- ev:
				return true
			case <-ctx.Done():
				return false
			}
		}
		start := cursor.Encode()
		for _, it := range initial {
			if !send(watch.Event{Type: watch.Added, Object: &WatchItem{Item: it, RV: cursor[it.Cluster], Cursor: start}}) {
				return
			}
		}
		initial = nil
		if !send(watch.Event{Type: watch.Bookmark, Object: &WatchItem{Item: Item{Resource: r.name}, Cursor: start, InitialEventsEnd: opts.InitialEvents}}) {
			return
		}
		deliver := func(ev Event) bool {
			if ev.RV <= cursor[ev.Cluster] {
				return true // already sent in the replay
			}
			cursor[ev.Cluster] = ev.RV
			item := &WatchItem{Item: Item{Cluster: ev.Cluster, Resource: r.name, Object: ev.Object}, RV: ev.RV, Cursor: cursor.Encode()}
			return send(watch.Event{Type: ev.Type, Object: item})
		}
		for _, ev := range replay {
			if !deliver(ev) {
				return
			}
		}
		for {
			select {
			case ev := <-w.in:
				if !deliver(ev) {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return sw, nil
}

// errorDeliveryTimeout bounds how long an ended watcher waits for its consumer to take
// the final ERROR event.
const errorDeliveryTimeout = 10 * time.Second

type streamWatch struct {
	out    chan watch.Event
	cancel context.CancelFunc
	once   sync.Once
}

func (s *streamWatch) Stop()                          { s.once.Do(s.cancel) }
func (s *streamWatch) ResultChan() <-chan watch.Event { return s.out }
