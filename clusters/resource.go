package clusters

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
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
	informer  *reflectorInformer
	// factory is the context's shared informer factory that runs informer (built-in
	// types); nil for custom resources, whose informer runs on its own goroutine.
	factory informers.SharedInformerFactory
	ref     *InformerRef
	lister  cache.ListerWatcherWithContext // unobserved: for resourceVersion probes
	log     *zap.Logger

	// cancel stops the informer; done is closed once it has stopped.
	cancel func()
	done   <-chan struct{}

	// objects follows the informer's store through its event handler: status and
	// metrics read it without listing the store's keys.
	objects atomic.Int64

	mu    sync.Mutex
	facts resourceFacts
	cond  Condition
	cnt   counters
	proof proof
	// stream is the current (or last) watch request.
	stream *stream
	// lastProbe is when a probe listing this resource was last sent.
	lastProbe time.Time
	// changes counts the changes (ADDED, MODIFIED, DELETED) its watches delivered;
	// changesAtProbe is that count when the last probe was sent. A resource that changed
	// since is probed first: its bound is the one that moves.
	changes, changesAtProbe uint64
	// listStart is when the first page of the list in progress was sent (the list path);
	// zero when none is.
	listStart time.Time
}

type resourceFacts struct {
	synced, stopped, notServed    bool
	errPhase                      Phase
	errReason, errMessage         string
	watchConnected                bool
	initialSync, lastList, lastEv time.Time
	// listPath is how the last complete list came (ListPathWatchList, ListPathList).
	listPath string
}

// How a resource's last complete list came (ResourceStatus.ListPath).
const (
	// ListPathWatchList: a watch-list stream's initial events, then its bookmark.
	ListPathWatchList = "WatchList"
	// ListPathList: LIST requests, page by page; the apiserver refused the watch-list
	// stream (it does not serve them) or the stream failed.
	ListPathList = "List"
)

func (rc *resourceCache) status() ResourceStatus {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	s := ResourceStatus{
		Condition: rc.condNow(), Resource: rc.display, Namespace: rc.namespace, Kind: rc.codec.gvk.Kind,
		WatchConnected: rc.facts.watchConnected, ListPath: rc.facts.listPath,
	}
	if rc.requested != rc.display {
		s.Requested = rc.requested
	}
	s.Objects = rc.objectsNow()
	s.Counters = rc.cnt.snapshot(&rc.proof)
	s.ResourceVersionLag = s.Counters.ResourceVersionLag
	if st, ok := rc.stalenessNow(rc.cluster.opts.Clock.Now()); ok {
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
	if !rc.proof.current(now, rc.cluster.staleAfter()) {
		return Condition{Phase: PhaseDegraded, Reason: ReasonStale, Message: rc.staleMessage(now)}
	}
	return Condition{Phase: PhaseSynced}
}

// condNow is the resource's condition as of now: the stored one, except that a Synced
// resource whose proof has run out since the last derivation is Stale already (phases
// are derived on events and probes; the claim must hold when it is read). rc.mu is held.
func (rc *resourceCache) condNow() Condition {
	now := rc.cluster.opts.Clock.Now()
	if rc.cond.Phase == PhaseSynced && !rc.proof.current(now, rc.cluster.staleAfter()) {
		return Condition{Phase: PhaseDegraded, Reason: ReasonStale, Message: rc.staleMessage(now), LastTransitionTime: now}
	}
	return rc.cond
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
		rc.display, bound.Round(time.Millisecond), rc.cluster.staleAfter())
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

// start runs the informer until ctx ends or cancel is called: through its factory
// (built-in types) or on a goroutine of its own.
func (rc *resourceCache) start(ctx context.Context) {
	rc.update(func(f *resourceFacts) {})
	if rc.factory != nil {
		rc.factory.StartWithContext(ctx)
		return
	}
	go rc.informer.RunWithContext(ctx)
}

// synced: the first list is in the cache (called once, by the informer).
func (rc *resourceCache) synced() {
	rc.update(func(f *resourceFacts) {
		f.synced = true
		if f.initialSync.IsZero() {
			f.initialSync = rc.cluster.opts.Clock.Now()
			rc.cnt.initialSyncDuration = f.initialSync.Sub(rc.cnt.started)
		}
	})
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
	rc.proof.listed(start, rv, now)
}
