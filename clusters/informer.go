package clusters

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/watchlist"
)

// resourceCache is one informer: one resource of one cluster, in one namespace or all.
// It observes its own list and watch calls (client-go's watch error handler is not called
// for connection errors, 429 or 410) and derives the resource's phase from what it saw.
type resourceCache struct {
	cluster   *Cluster
	requested string
	gvr       schema.GroupVersionResource
	display   string // "deployments.apps"
	namespace string
	codec     *codec
	informer  cache.SharedIndexInformer
	ref       *InformerRef
	lister    cache.ListerWatcherWithContext // unobserved: for resourceVersion probes
	log       *zap.Logger

	cancel context.CancelFunc
	done   chan struct{}

	// objects follows the informer's store through its event handler: status and
	// metrics read it without listing the store's keys.
	objects atomic.Int64

	mu    sync.Mutex
	facts resourceFacts
	cond  Condition
	cnt   counters
	proof proof
}

type resourceFacts struct {
	synced, stopped, notServed    bool
	errPhase                      Phase
	errReason, errMessage         string
	watchConnected                bool
	initialSync, lastList, lastEv time.Time
}

func (rc *resourceCache) status() ResourceStatus {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	s := ResourceStatus{
		Condition: rc.cond, Resource: rc.display, Namespace: rc.namespace, Kind: rc.codec.gvk.Kind,
		WatchConnected: rc.facts.watchConnected,
	}
	if rc.requested != rc.display {
		s.Requested = rc.requested
	}
	if !rc.facts.stopped && rc.informer != nil {
		s.Objects = int(rc.objects.Load())
	}
	s.Counters = rc.cnt.snapshot(&rc.proof)
	s.ResourceVersionLag = s.Counters.ResourceVersionLag
	if st, ok := rc.proof.staleness(rc.cluster.opts.Clock.Now()); ok && !rc.facts.stopped {
		secs := st.Seconds()
		s.StalenessSeconds = &secs
	}
	s.InitialSyncTime = timePtr(rc.facts.initialSync)
	s.LastListTime = timePtr(rc.facts.lastList)
	s.LastEventTime = timePtr(rc.facts.lastEv)
	return s
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// update changes the facts under the lock, recomputes the phase and, when it changed,
// records the transition, logs it and tells the cluster.
func (rc *resourceCache) update(fn func(f *resourceFacts)) {
	rc.mu.Lock()
	fn(&rc.facts)
	next := rc.derive()
	changed := rc.cond.moveTo(next, rc.cluster.opts.Clock.Now())
	rc.mu.Unlock()
	if changed {
		rc.log.Info("resource phase changed", conditionFields(next)...)
		rc.cluster.resourceChanged()
	}
}

func (rc *resourceCache) derive() Condition {
	f := rc.facts
	switch {
	case f.stopped:
		return Condition{Phase: PhaseStopped, Reason: "Stopped"}
	case f.notServed:
		return Condition{Phase: PhaseNotServed, Reason: "NotServed", Message: fmt.Sprintf("the cluster does not serve %s", rc.display)}
	case f.errPhase == PhaseForbidden || f.errPhase == PhaseUnauthorized:
		return Condition{Phase: f.errPhase, Reason: f.errReason, Message: f.errMessage}
	case !f.synced:
		return Condition{Phase: PhaseSyncing, Reason: f.errReason, Message: f.errMessage}
	case f.errPhase != "":
		return Condition{Phase: PhaseDegraded, Reason: f.errReason, Message: f.errMessage}
	}
	now := rc.cluster.opts.Clock.Now()
	if !rc.proof.current(now, rc.cluster.opts.StaleAfter) {
		return Condition{Phase: PhaseDegraded, Reason: ReasonStale, Message: rc.staleMessage(now)}
	}
	return Condition{Phase: PhaseSynced}
}

// ReasonStale: the cache cannot prove it is current. Its watch delivered nothing that
// reaches a recent probe's revision (a stalled watch or connection), or it has not caught
// up since a failure.
const ReasonStale = "Stale"

// staleMessage says why a resource is Stale; rc.mu is held.
func (rc *resourceCache) staleMessage(now time.Time) string {
	p := &rc.proof
	bound, ok := p.staleness(now)
	switch {
	case !ok:
		return fmt.Sprintf("%s: no probe answered yet has been reached by the cache", rc.display)
	case !p.provenAt.After(p.disruptedAt):
		return fmt.Sprintf("%s: not proven current since a failure %s ago (the cache held everything up to %s ago)",
			rc.display, now.Sub(p.disruptedAt).Round(time.Millisecond), bound.Round(time.Millisecond))
	}
	return fmt.Sprintf("%s: the cache is only proven to hold what the apiserver had %s ago (limit %s); its watch may be stalled",
		rc.display, bound.Round(time.Millisecond), rc.cluster.opts.StaleAfter)
}

func (rc *resourceCache) recordError(verb string, err error) {
	phase, reason := classify(err)
	if phase == PhaseNotServed {
		// The resource went away (e.g. its CRD was deleted): rediscovery decides.
		rc.cluster.kickDiscovery()
	}
	rc.update(func(f *resourceFacts) {
		f.errPhase, f.errReason = phase, reason
		f.errMessage = fmt.Sprintf("%s %s: %v", verb, rc.display, err)
	})
}

func (rc *resourceCache) clearError(f *resourceFacts) {
	f.errPhase, f.errReason, f.errMessage = "", "", ""
}

// run starts the informer and marks the resource synced once its first list is stored.
// When ctx ends it tells the handler that the informer's objects are gone.
func (rc *resourceCache) run(ctx context.Context) {
	defer close(rc.done)
	if h := rc.cluster.opts.Handler; h != nil {
		defer h.OnStop(rc.ref)
	}
	rc.update(func(f *resourceFacts) {})
	go rc.informer.RunWithContext(ctx)
	if cache.WaitForCacheSync(ctx.Done(), rc.informer.HasSynced) {
		rc.update(func(f *resourceFacts) {
			f.synced = true
			if f.initialSync.IsZero() {
				f.initialSync = rc.cluster.opts.Clock.Now()
				rc.cnt.initialSyncDuration = f.initialSync.Sub(rc.cnt.started)
			}
		})
	}
	<-ctx.Done()
}

// observedLW wraps a ListerWatcher: it bounds every call with a timeout (a frozen
// apiserver hangs instead of refusing), caps concurrent lists fleet-wide, and records what
// happened on the resource.
type observedLW struct {
	inner cache.ListerWatcherWithContext
	rc    *resourceCache
}

func (lw *observedLW) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	opts2 := lw.rc.cluster.opts
	if err := opts2.ListLimiter.acquire(ctx); err != nil {
		return nil, err
	}
	defer opts2.ListLimiter.release()
	ctx, cancel := context.WithTimeout(ctx, opts2.ListTimeout)
	defer cancel()
	if opts.Continue == "" {
		// A consistent read (served from the apiserver's watch cache since Kubernetes
		// 1.31) instead of the reflector's "any version" read: the list then proves the
		// cache current as of the moment it was sent.
		opts.ResourceVersion, opts.ResourceVersionMatch = "", ""
	}
	start := opts2.Clock.Now()
	obj, err := lw.inner.ListWithContext(ctx, opts)
	now := opts2.Clock.Now()
	lw.rc.mu.Lock()
	lw.rc.cnt.lists++
	if err != nil {
		lw.rc.cnt.listErrors++
	}
	lw.rc.mu.Unlock()
	if err != nil {
		lw.rc.recordError("list", err)
		return nil, err
	}
	var rv uint64
	if l, err := meta.ListAccessor(obj); err == nil {
		rv = ParseResourceVersion(l.GetResourceVersion())
	}
	lw.rc.listDone(start, now, rv)
	lw.rc.update(func(f *resourceFacts) {
		f.lastList = now
		lw.rc.clearError(f)
	})
	return obj, nil
}

// listDone counts a completed list (or the initial part of a watch-list stream). Lists
// are consistent reads (see ListWithContext), so the list's revision was current when it
// was sent: the cache is proven current as of start.
func (rc *resourceCache) listDone(start, now time.Time, rv uint64) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.cnt.successfulLists++
	if rc.cnt.successfulLists > 1 {
		rc.cnt.relists++
	}
	rc.cnt.listDuration.observe(now.Sub(start).Seconds())
	rc.proof.relisted(rv, now)
	if rv > 0 && start.After(rc.proof.provenAt) {
		rc.proof.provenAt = start
	}
}

func (lw *observedLW) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	o := lw.rc.cluster.opts
	// A watch-list stream (sendInitialEvents) is this informer's list: cap it like one
	// until its initial-events-end bookmark.
	initial := opts.SendInitialEvents != nil && *opts.SendInitialEvents
	if initial {
		if err := o.ListLimiter.acquire(ctx); err != nil {
			return nil, err
		}
		// Consistent, like lists: the initial-events-end bookmark then proves the cache
		// current as of the request.
		opts.ResourceVersion = ""
	} else {
		timeout := lw.rc.watchTimeout()
		opts.TimeoutSeconds = &timeout
	}
	release := sync.OnceFunc(func() {
		if initial {
			o.ListLimiter.release()
		}
	})
	wctx, cancel := context.WithCancel(ctx)
	// Only establishing the stream is bounded; the stream itself lives until the server
	// ends it (its timeoutSeconds) or the informer stops.
	timer := time.AfterFunc(o.RequestTimeout, cancel)
	start := o.Clock.Now()
	w, err := lw.inner.WatchWithContext(wctx, opts)
	timer.Stop()
	lw.rc.mu.Lock()
	if initial {
		lw.rc.cnt.lists++ // a watch-list stream is this informer's list
	}
	if err != nil {
		lw.rc.cnt.watchErrors++
		if initial {
			lw.rc.cnt.listErrors++
		}
	} else {
		lw.rc.cnt.watchStarts++
	}
	lw.rc.mu.Unlock()
	if err != nil {
		cancel()
		release()
		lw.rc.recordError("watch", err)
		return nil, err
	}
	lw.rc.update(func(f *resourceFacts) {
		f.watchConnected = true
		if !initial {
			lw.rc.clearError(f)
		}
	})
	ow := &observedWatch{inner: w, out: make(chan watch.Event), stop: make(chan struct{}), rc: lw.rc, initial: initial, release: release, cancel: cancel, start: start}
	if !initial {
		// The apiserver sends a bookmark two seconds before the watch's timeout; probing
		// the resource just before makes that bookmark prove it current.
		ow.deadline = start.Add(time.Duration(*opts.TimeoutSeconds) * time.Second)
		ow.proofTimer = time.AfterFunc(time.Duration(*opts.TimeoutSeconds)*time.Second-preBookmarkLead, func() {
			lw.rc.cluster.probeResource(wctx, lw.rc)
		})
	}
	go ow.run()
	return ow, nil
}

// Watch lifetimes (see freshness.go): a watch ends after the idle proof interval, and a
// resource not proven current since its last failure gets a short one, so that a bookmark
// proves it within seconds.
const (
	// preBookmarkLead is how long before a watch's end its resource is probed: the
	// apiserver's bookmark is due 2s before the end, give or take its 1s bookmark timer.
	preBookmarkLead = 3 * time.Second
	// shortWatch is the timeout of a watch whose resource awaits proof: its bookmark comes
	// about 2s after it starts.
	shortWatch = 4 * time.Second
)

// watchTimeout is the timeout of the resource's next watch, in seconds.
func (rc *resourceCache) watchTimeout() int64 {
	o := rc.cluster.opts
	rc.mu.Lock()
	current := rc.proof.current(o.Clock.Now(), o.StaleAfter)
	rc.mu.Unlock()
	if !current {
		return int64(shortWatch / time.Second)
	}
	// Jittered, so that a cluster's watches do not all renew at the same moment.
	return int64(wait.Jitter(o.IdleProofInterval, 0.1) / time.Second)
}

// observedWatch forwards a watch stream and records its events and its end.
type observedWatch struct {
	inner watch.Interface
	out   chan watch.Event
	stop  chan struct{}
	once  sync.Once
	rc    *resourceCache
	// initial is true while a watch-list stream delivers its initial events: those are
	// the list, not changes, and have no lag to measure.
	initial bool
	release func()
	cancel  context.CancelFunc
	start   time.Time
	// deadline is when the server ends the stream; proofTimer probes before its bookmark.
	deadline   time.Time
	proofTimer *time.Timer
}

func (w *observedWatch) ResultChan() <-chan watch.Event { return w.out }

func (w *observedWatch) Stop() {
	w.once.Do(func() {
		close(w.stop)
		w.inner.Stop()
	})
}

func (w *observedWatch) run() {
	defer func() {
		close(w.out)
		w.release()
		w.cancel()
		if w.proofTimer != nil {
			w.proofTimer.Stop()
		}
		now := w.rc.cluster.opts.Clock.Now()
		w.rc.update(func(f *resourceFacts) {
			f.watchConnected = false
			// A stream that ends well before its timeout broke: whatever it proved,
			// the cache must prove itself again.
			if w.deadline.IsZero() || now.Before(w.deadline.Add(-time.Second)) {
				w.rc.proof.disrupted(now)
			}
		})
		if w.initial {
			// The stream ended before its initial events were complete: a failed list.
			w.rc.mu.Lock()
			w.rc.cnt.listErrors++
			w.rc.mu.Unlock()
		}
	}()
	clock := w.rc.cluster.opts.Clock
	for {
		select {
		case ev, ok := <-w.inner.ResultChan():
			if !ok {
				return
			}
			select {
			case <-w.stop: // ended here (Stop): what the closing stream says is noise
				return
			default:
			}
			w.observe(ev, clock.Now())
			select {
			case w.out <- ev:
			case <-w.stop:
				return
			}
		case <-w.stop:
			return
		}
	}
}

func (w *observedWatch) observe(ev watch.Event, now time.Time) {
	rc := w.rc
	if ev.Type == watch.Error {
		rc.mu.Lock()
		rc.cnt.watchErrors++
		rc.cnt.events[string(ev.Type)]++
		rc.mu.Unlock()
		rc.recordError("watch", apierrors.FromObject(ev.Object))
		return
	}
	m, err := meta.Accessor(ev.Object)
	if err != nil {
		return
	}
	rv := ParseResourceVersion(m.GetResourceVersion())
	if ev.Type == watch.Bookmark && w.initial && m.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true" {
		w.initial = false
		w.release()
		rc.listDone(w.start, now, rv)
		rc.update(func(f *resourceFacts) {
			f.lastList, f.lastEv = now, now
			rc.clearError(f)
		})
		// The stream goes on as a watch with the reflector's long timeout; end it after
		// the idle proof interval so that the next watch proves an idle resource current.
		d := rc.cluster.opts.IdleProofInterval
		w.deadline = now.Add(d)
		w.proofTimer = time.AfterFunc(d, w.Stop)
	}
	rc.mu.Lock()
	rc.cnt.events[string(ev.Type)]++
	if ev.Type == watch.Bookmark {
		rc.cnt.lastBookmark = now
	}
	if !w.initial {
		// The initial events of a watch-list come in key order, not revision order.
		rc.proof.advance(rv, now)
	}
	rc.facts.lastEv = now
	rc.mu.Unlock()
}

// IsWatchListSemanticsUnSupported passes the wrapped client's answer on to the reflector,
// which otherwise assumes every ListerWatcher supports watch-list streams.
func (lw *observedLW) IsWatchListSemanticsUnSupported() bool {
	return watchlist.DoesClientNotSupportWatchListSemantics(lw.inner)
}

// List and Watch satisfy cache.ListerWatcher; the reflector uses the context variants.
func (lw *observedLW) List(opts metav1.ListOptions) (runtime.Object, error) {
	return lw.ListWithContext(context.Background(), opts)
}

func (lw *observedLW) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return lw.WatchWithContext(context.Background(), opts)
}

func conditionFields(c Condition) []zap.Field {
	fields := []zap.Field{zap.String("phase", string(c.Phase))}
	if c.Reason != "" {
		fields = append(fields, zap.String("reason", c.Reason))
	}
	if c.Message != "" {
		fields = append(fields, zap.String("message", c.Message))
	}
	return fields
}
