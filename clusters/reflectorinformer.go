package clusters

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
)

// reflectorInformer is a cache.SharedIndexInformer for exactly one consumer: a client-go
// Reflector (list or watch-list, then watch, with client-go's backoff and bookmarks)
// writes into a store that applies the transform and calls the one event handler
// synchronously, on the reflector's goroutine.
//
// Why not cache.NewSharedIndexInformer: its fan-out to many handlers costs, per informer,
// a DeltaFIFO, a controller goroutine popping it, a processor goroutine, and per handler
// a listener with two goroutines and a ring buffer that starts at 1,024 slots. fleetcache
// has one consumer per informer (the unified index), so all of that only copies events
// from one goroutine to another. What remains per informer is client-go's own: the
// reflector's loop and its resync timer goroutine, the watch stream's decoding goroutine
// and the HTTP/2 stream's.
//
// The consistency contract is the shared informer's: the handler sees every object
// change in order, Replace (a list, or a watch-list's initial events) delivers adds,
// updates and deletes against what the store held, and HasSynced turns true once the
// first list is in the store and was handed to the handler. A handler must be added
// before Run; a second one is refused (there is no fan-out).
type reflectorInformer struct {
	lw          cache.ListerWatcher
	example     runtime.Object
	description string
	hooks       informerHooks

	mu        sync.Mutex
	handler   cache.ResourceEventHandler
	transform cache.TransformFunc
	started   bool
	stopped   bool
	cancel    context.CancelFunc
	reflector *cache.Reflector

	indexer  cache.Indexer
	detector cache.MutationDetector
	synced   chan struct{}
	done     chan struct{}
}

var _ cache.SharedIndexInformer = (*reflectorInformer)(nil)

// informerHooks tell the owner what the reflector stored, on the reflector's goroutine,
// after the handler was called. Any may be nil.
type informerHooks struct {
	// listed: a complete list (or a watch-list's initial events) at revision rv.
	listed func(rv string)
	// progressed: an event or bookmark at revision rv, past the list.
	progressed func(rv string)
	// synced: the first list was handed to the handler (once).
	synced func()
	// stopped: the informer stopped; what it delivered is no longer followed.
	stopped func()
}

func newReflectorInformer(lw cache.ListerWatcher, example runtime.Object, description string, hooks informerHooks) *reflectorInformer {
	return &reflectorInformer{
		lw: lw, example: example, description: description, hooks: hooks,
		indexer:  cache.NewIndexer(cache.DeletionHandlingMetaNamespaceKeyFunc, cache.Indexers{}),
		detector: cache.NewCacheMutationDetector(description),
		synced:   make(chan struct{}),
		done:     make(chan struct{}),
	}
}

// errHandlerSet: a reflectorInformer feeds one consumer.
var errHandlerSet = errors.New("this informer has one event handler, and it is set")

func (i *reflectorInformer) AddEventHandler(h cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error) {
	return i.AddEventHandlerWithOptions(h, cache.HandlerOptions{})
}

func (i *reflectorInformer) AddEventHandlerWithResyncPeriod(h cache.ResourceEventHandler, _ time.Duration) (cache.ResourceEventHandlerRegistration, error) {
	return i.AddEventHandlerWithOptions(h, cache.HandlerOptions{})
}

func (i *reflectorInformer) AddEventHandlerWithOptions(h cache.ResourceEventHandler, _ cache.HandlerOptions) (cache.ResourceEventHandlerRegistration, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.handler != nil || i.started {
		return nil, errHandlerSet
	}
	i.handler = h
	return registration{i}, nil
}

func (i *reflectorInformer) RemoveEventHandler(cache.ResourceEventHandlerRegistration) error {
	return errors.New("the event handler of this informer cannot be removed")
}

func (i *reflectorInformer) SetTransform(t cache.TransformFunc) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.started {
		return errors.New("informer already started")
	}
	i.transform = t
	return nil
}

// SetWatchErrorHandler is refused: errors are observed by the ListerWatcher, which
// sees the ones client-go's handler misses (429, 410, refused connections).
func (i *reflectorInformer) SetWatchErrorHandler(cache.WatchErrorHandler) error {
	return errors.New("watch errors are observed by the informer's ListerWatcher")
}

func (i *reflectorInformer) SetWatchErrorHandlerWithContext(cache.WatchErrorHandlerWithContext) error {
	return errors.New("watch errors are observed by the informer's ListerWatcher")
}

func (i *reflectorInformer) AddIndexers(indexers cache.Indexers) error {
	return i.indexer.AddIndexers(indexers)
}

func (i *reflectorInformer) GetStore() cache.Store           { return i.indexer }
func (i *reflectorInformer) GetIndexer() cache.Indexer       { return i.indexer }
func (i *reflectorInformer) GetController() cache.Controller { return nil }

func (i *reflectorInformer) Run(stopCh <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-stopCh:
		case <-i.done:
		}
		cancel()
	}()
	i.RunWithContext(ctx)
}

// RunWithContext runs the reflector until ctx ends or Stop is called. It runs once.
func (i *reflectorInformer) RunWithContext(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	i.mu.Lock()
	if i.started || i.stopped {
		i.mu.Unlock()
		return
	}
	i.started, i.cancel = true, cancel
	if i.handler == nil {
		i.handler = cache.ResourceEventHandlerFuncs{}
	}
	i.reflector = cache.NewReflectorWithOptions(i.lw, i.example, (*dispatchStore)(i), cache.ReflectorOptions{
		Name: i.description, TypeDescription: i.description,
	})
	i.mu.Unlock()
	defer func() {
		i.mu.Lock()
		i.stopped = true
		i.mu.Unlock()
		if i.hooks.stopped != nil {
			i.hooks.stopped()
		}
		close(i.done)
	}()
	// A no-op unless KUBE_CACHE_MUTATION_DETECTOR is set (the tests set it).
	go i.detector.Run(ctx.Done())
	i.reflector.RunWithContext(ctx)
}

// Stop ends Run (and keeps a not yet started informer from running); Done is closed
// once it has returned.
func (i *reflectorInformer) Stop() {
	i.mu.Lock()
	cancel, started := i.cancel, i.started
	neverRan := !started && !i.stopped
	i.stopped = true
	i.mu.Unlock()
	if neverRan {
		if i.hooks.stopped != nil {
			i.hooks.stopped()
		}
		close(i.done)
	}
	if cancel != nil {
		cancel()
	}
}

// Done is closed when the informer has stopped.
func (i *reflectorInformer) Done() <-chan struct{} { return i.done }

func (i *reflectorInformer) HasSynced() bool {
	select {
	case <-i.synced:
		return true
	default:
		return false
	}
}

func (i *reflectorInformer) HasSyncedChecker() cache.DoneChecker { return syncedChecker{i} }

func (i *reflectorInformer) LastSyncResourceVersion() string {
	i.mu.Lock()
	r := i.reflector
	i.mu.Unlock()
	if r == nil {
		return ""
	}
	return r.LastSyncResourceVersion()
}

func (i *reflectorInformer) IsStopped() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.stopped
}

type syncedChecker struct{ i *reflectorInformer }

func (s syncedChecker) Name() string          { return "informer " + s.i.description }
func (s syncedChecker) Done() <-chan struct{} { return s.i.synced }

type registration struct{ i *reflectorInformer }

func (r registration) HasSynced() bool                     { return r.i.HasSynced() }
func (r registration) HasSyncedChecker() cache.DoneChecker { return syncedChecker{r.i} }

// dispatchStore is the reflector's store: it keeps the transformed objects (for
// updates' old objects and for deletions a relist reveals) and calls the handler. Only
// the reflector's goroutine writes to it.
type dispatchStore reflectorInformer

var (
	_ cache.TransformingStore      = (*dispatchStore)(nil)
	_ cache.ReflectorBookmarkStore = (*dispatchStore)(nil)
)

// Transformer lets the reflector compact a watch-list's initial events in its temporary
// store, as they arrive, instead of holding them whole until the list is complete.
func (s *dispatchStore) Transformer() cache.TransformFunc { return s.transform }

func (s *dispatchStore) compact(obj any) (any, error) {
	if s.transform == nil {
		return obj, nil
	}
	return s.transform(obj)
}

func (s *dispatchStore) Add(obj any) error {
	obj, err := s.compact(obj)
	if err != nil {
		return err
	}
	if err := s.put(obj); err != nil {
		return err
	}
	s.progressed(obj)
	return nil
}

func (s *dispatchStore) Update(obj any) error { return s.Add(obj) }

func (s *dispatchStore) put(obj any) error {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return err
	}
	old, exists, _ := s.indexer.GetByKey(key)
	if err := s.indexer.Add(obj); err != nil {
		return err
	}
	s.detector.AddObject(obj)
	if exists {
		s.handler.OnUpdate(old, obj)
	} else {
		s.handler.OnAdd(obj, false)
	}
	return nil
}

// progressed tells the owner the revision of a watch event now stored.
func (s *dispatchStore) progressed(obj any) {
	if s.hooks.progressed == nil {
		return
	}
	if m, err := meta.Accessor(obj); err == nil {
		s.hooks.progressed(m.GetResourceVersion())
	}
}

// Bookmark: the watch reached rv (client-go calls it for bookmarks after the list).
func (s *dispatchStore) Bookmark(rv string) error {
	if s.hooks.progressed != nil {
		s.hooks.progressed(rv)
	}
	return nil
}

func (s *dispatchStore) Delete(obj any) error {
	obj, err := s.compact(obj)
	if err != nil {
		return err
	}
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return err
	}
	old, exists, _ := s.indexer.GetByKey(key)
	if exists {
		if err := s.indexer.Delete(old); err != nil {
			return err
		}
		s.handler.OnDelete(obj)
	}
	s.progressed(obj)
	return nil
}

// Replace hands the handler a complete list: objects not in it were deleted while the
// informer was not watching, new ones are added, changed ones updated. An object the
// store already holds unchanged (unchanged) makes no event: a relist of 30,000 pods
// that mostly did not change must not send 30,000 MODIFIED events to every watcher.
func (s *dispatchStore) Replace(list []any, rv string) error {
	keep := make(map[string]struct{}, len(list))
	for _, obj := range list {
		obj, err := s.compact(obj) // already compact after a watch-list: a no-op then
		if err != nil {
			return err
		}
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err != nil {
			return fmt.Errorf("replace: %w", err)
		}
		keep[key] = struct{}{}
		if old, exists, _ := s.indexer.GetByKey(key); exists && unchanged(old, obj) {
			continue
		}
		if err := s.put(obj); err != nil {
			return err
		}
	}
	for _, key := range s.indexer.ListKeys() {
		if _, ok := keep[key]; ok {
			continue
		}
		if old, exists, _ := s.indexer.GetByKey(key); exists {
			if err := s.indexer.Delete(old); err != nil {
				return err
			}
			s.handler.OnDelete(cache.DeletedFinalStateUnknown{Key: key, Obj: old})
		}
	}
	if s.hooks.listed != nil {
		s.hooks.listed(rv)
	}
	select {
	case <-s.synced:
	default:
		close(s.synced)
		if s.hooks.synced != nil {
			s.hooks.synced()
		}
	}
	return nil
}

// unchanged reports whether a listed object is the one the store holds: the same UID at
// the same resourceVersion (every write to an object changes it), or, where the
// apiserver gives no resourceVersion (some aggregated APIs), the same stored bytes.
func unchanged(old, obj any) bool {
	o, ok1 := old.(*Object)
	n, ok2 := obj.(*Object)
	if !ok1 || !ok2 || o.UID != n.UID {
		return false
	}
	if n.ResourceVersion != "" {
		return o.ResourceVersion == n.ResourceVersion
	}
	return o.ResourceVersion == "" && bytes.Equal(o.Raw(), n.Raw())
}

// Resync has nothing to do: there is no resync period, and one consumer.
func (s *dispatchStore) Resync() error { return nil }
