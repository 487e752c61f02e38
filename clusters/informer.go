package clusters

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/watchlist"
)

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
		lw.rc.update(func(f *resourceFacts) { f.watchConnected = false })
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
	// initialStreamGrace is how long a watch-list stream stays open after its initial
	// events: long enough for the events sent right after them.
	initialStreamGrace = time.Second
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
	// endInitial: the initial-events-end bookmark was seen; the stream ends shortly
	// after the reflector has taken it.
	endInitial bool
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
			// A stream that ends well before its timeout broke: whatever it proved,
			// the cache must prove itself again. One that reached its timeout is renewed
			// at once (a failed renewal reports itself), so the watch counts as connected.
			if w.deadline.IsZero() || now.Before(w.deadline.Add(-time.Second)) {
				f.watchConnected = false
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
			if w.endInitial {
				// The reflector stores the initial events (which can take seconds) and
				// then reads on from this stream. Ended before it reads an event there,
				// the stream counts as a "very short watch", an error, and the reflector
				// lists everything again. So the grace starts once it has taken one more
				// bookmark (same revision, an ordinary one), which it reads only then.
				w.endInitial = false
				select {
				case w.out <- watch.Event{Type: watch.Bookmark, Object: plainBookmark(ev.Object)}:
				case <-w.stop:
					return
				}
				w.deadline = clock.Now().Add(initialStreamGrace)
				w.proofTimer = time.AfterFunc(initialStreamGrace, w.Stop)
			}
		case <-w.stop:
			return
		}
	}
}

// plainBookmark is a copy of the initial-events-end bookmark object without its
// annotation: the same revision, as an ordinary bookmark.
func plainBookmark(obj runtime.Object) runtime.Object {
	cp := obj.DeepCopyObject()
	if m, err := meta.Accessor(cp); err == nil {
		m.SetAnnotations(nil)
	}
	return cp
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
		// The stream would go on as a watch with the reflector's long timeout and no
		// proof before it ends: end it now (the reflector resumes from the bookmark), so
		// that the next watch, of the idle proof interval, proves an idle resource in
		// time. Kept open for longer, the first proof came after two intervals, past
		// staleAfter.
		w.endInitial = true // once the reflector has the bookmark (see run)
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

func (c *Cluster) newResourceCache(r resolved, ns string) (*resourceCache, error) {
	rc := &resourceCache{
		cluster: c, requested: r.requested, gvr: r.gvr, display: r.display(), namespace: ns,
		log:   c.log.With(zap.String("resource", r.display())),
		done:  make(chan struct{}),
		cond:  Condition{Phase: PhasePending, LastTransitionTime: c.opts.Clock.Now()},
		cnt:   newCounters(c.opts.Clock.Now()),
		proof: newProof(),
	}
	if ns != "" {
		rc.log = rc.log.With(zap.String("namespace", ns))
	}
	rc.ref = &InformerRef{
		Cluster: c.target.Name, Resource: r.display(), Namespace: ns, Kind: r.gvk.Kind, APIVersion: r.gvk.GroupVersion().String(),
		Namespaced: r.namespaced, Names: r.names, Singular: r.api.SingularName, ShortNames: r.api.ShortNames, Columns: r.columns,
		ID: informerIDs.Add(1),
	}
	indexes, err := compileIndexes(append(append([]IndexSpec(nil), DefaultIndexes[r.display()]...), r.spec.Indexes...))
	if err != nil {
		return nil, err
	}
	tweak := func(o *metav1.ListOptions) {
		o.LabelSelector = r.spec.LabelSelector
		o.FieldSelector = r.spec.FieldSelector
	}
	var lw *cache.ListWatch
	var example runtime.Object
	if typed, err := scheme.Scheme.New(r.gvk); err == nil {
		if _, ok := typed.(protoObject); !ok {
			return nil, fmt.Errorf("%s is not a protobuf type", r.gvk)
		}
		// Built-in types: protobuf on the wire and typed decoding, about 10x cheaper than
		// JSON into unstructured.
		cfg := rest.CopyConfig(c.informerClient)
		cfg.GroupVersion = &schema.GroupVersion{Group: r.gvk.Group, Version: r.gvk.Version}
		cfg.APIPath = "/apis"
		if r.gvk.Group == "" {
			cfg.APIPath = "/api"
		}
		cfg.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
		cfg.ContentType = runtime.ContentTypeProtobuf
		cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
		client, err := rest.RESTClientForConfigAndClient(cfg, c.conn)
		if err != nil {
			return nil, err
		}
		lw = cache.NewFilteredListWatchFromClient(client, r.gvr.Resource, ns, tweak)
		example = typed
		gvk := r.gvk
		rc.codec = &codec{gvk: gvk, indexes: indexes, newTyped: func() protoObject {
			obj, _ := scheme.Scheme.New(gvk)
			return obj.(protoObject)
		}}
	} else {
		dyn, err := dynamic.NewForConfigAndClient(c.informerClient, c.conn)
		if err != nil {
			return nil, err
		}
		ri := dyn.Resource(r.gvr).Namespace(ns)
		lw = &cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				tweak(&o)
				return ri.List(ctx, o)
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				tweak(&o)
				return ri.Watch(ctx, o)
			},
		}
		example = nil // unstructured: any kind
		rc.codec = &codec{gvk: r.gvk, indexes: indexes}
	}
	rc.lister = lw
	rc.informer = cache.NewSharedIndexInformerWithOptions(&observedLW{inner: lw, rc: rc}, example, cache.SharedIndexInformerOptions{
		ResyncPeriod:      c.opts.ResyncPeriod,
		ObjectDescription: c.target.Name + "/" + r.display(),
	})
	if err := rc.informer.SetTransform(rc.codec.compact); err != nil {
		return nil, err
	}
	// One handler: each costs the informer a listener with two goroutines and a buffer.
	if _, err := rc.informer.AddEventHandler(handlerFuncs(rc.ref, &rc.objects, c.opts.Handler)); err != nil {
		return nil, err
	}
	return rc, nil
}
