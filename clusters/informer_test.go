package clusters

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// scriptedLW plays a script: lists return the next list, watches the next watcher. It
// does not speak watch-list, so the reflector lists then watches.
type scriptedLW struct {
	mu      sync.Mutex
	lists   []*corev1.ConfigMapList
	watches []func() watch.Interface
	nList   int
	nWatch  int
}

func (s *scriptedLW) IsWatchListSemanticsUnSupported() bool { return true }

func (s *scriptedLW) ListWithContext(ctx context.Context, _ metav1.ListOptions) (runtime.Object, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.lists[min(s.nList, len(s.lists)-1)]
	s.nList++
	return l.DeepCopy(), nil
}

func (s *scriptedLW) WatchWithContext(ctx context.Context, _ metav1.ListOptions) (watch.Interface, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.watches[min(s.nWatch, len(s.watches)-1)]()
	s.nWatch++
	return w, nil
}

func cmList(rv string, names ...string) *corev1.ConfigMapList {
	l := &corev1.ConfigMapList{ListMeta: metav1.ListMeta{ResourceVersion: rv}}
	for _, n := range names {
		l.Items = append(l.Items, corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: "default", ResourceVersion: rv}})
	}
	return l
}

// TestGoneWatchIsCountedAsRelist: a watch ended by 410 Gone makes the reflector list
// again; the counters record the ERROR event, the watch error and one relist, and the
// cache holds the second list.
func TestGoneWatchIsCountedAsRelist(t *testing.T) {
	gone := func() watch.Interface {
		w := watch.NewFake()
		go w.Error(&metav1.Status{Status: metav1.StatusFailure, Code: http.StatusGone, Reason: metav1.StatusReasonExpired, Message: "too old resource version"})
		return w
	}
	quiet := func() watch.Interface { return watch.NewFake() }
	lw := &scriptedLW{
		lists:   []*corev1.ConfigMapList{cmList("10", "a"), cmList("20", "a", "b")},
		watches: []func() watch.Interface{gone, quiet},
	}
	c := New(Target{Name: "fake", Config: &rest.Config{}}, Options{})
	rc := &resourceCache{
		cluster: c, display: "configmaps", requested: "configmaps", done: make(chan struct{}),
		log: c.log, cnt: newCounters(time.Now()), proof: newProof(),
		codec: &codec{gvk: corev1.SchemeGroupVersion.WithKind("ConfigMap"), newTyped: func() protoObject { return &corev1.ConfigMap{} }},
		ref:   &InformerRef{Cluster: "fake", Resource: "configmaps", ID: 1},
	}
	rc.informer = cache.NewSharedIndexInformerWithOptions(&observedLW{inner: lw, rc: rc}, &corev1.ConfigMap{}, cache.SharedIndexInformerOptions{})
	if err := rc.informer.SetTransform(rc.codec.compact); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); <-rc.done }()
	go rc.run(ctx)

	var k Counters
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		k = rc.status().Counters
		return k.Relists >= 1 && len(rc.informer.GetStore().ListKeys()) == 2, nil
	})
	if err != nil {
		t.Fatalf("no relist observed: %+v", k)
	}
	if k.Relists != 1 || k.Lists != 2 || k.ListDuration.Count != 2 {
		t.Errorf("lists %d, relists %d, list durations %d: want 2, 1, 2", k.Lists, k.Relists, k.ListDuration.Count)
	}
	if k.Events["ERROR"] != 1 || k.WatchErrors != 1 || k.WatchStarts < 2 {
		t.Errorf("ERROR events %d, watch errors %d, watch starts %d: want 1, 1, >=2", k.Events["ERROR"], k.WatchErrors, k.WatchStarts)
	}
	rc.mu.Lock()
	cacheRV := rc.proof.cacheRV
	rc.mu.Unlock()
	if cacheRV != 20 {
		t.Errorf("cache resourceVersion %d, want 20 from the relist", cacheRV)
	}
}

// watchListLW serves one watch-list stream: the given watcher.
type watchListLW struct{ w watch.Interface }

func (l *watchListLW) ListWithContext(context.Context, metav1.ListOptions) (runtime.Object, error) {
	return cmList("1"), nil
}
func (l *watchListLW) WatchWithContext(context.Context, metav1.ListOptions) (watch.Interface, error) {
	return l.w, nil
}

// TestInitialStreamOutlivesASlowReflector: a reflector takes the initial-events-end
// bookmark, stores the initial events (seconds, for a big list on a busy machine), and
// only then reads on from the stream. The stream must still deliver something then: had
// it closed meanwhile, the reflector would call it a "very short watch" and list every
// object again.
func TestInitialStreamOutlivesASlowReflector(t *testing.T) {
	inner := watch.NewFake()
	c := New(Target{Name: "fake", Config: &rest.Config{}}, Options{})
	rc := &resourceCache{
		cluster: c, display: "configmaps", requested: "configmaps", done: make(chan struct{}),
		log: c.log, cnt: newCounters(time.Now()), proof: newProof(),
		ref: &InformerRef{Cluster: "fake", Resource: "configmaps", ID: 1},
	}
	lw := &observedLW{inner: &watchListLW{w: inner}, rc: rc}
	yes := true
	w, err := lw.WatchWithContext(context.Background(), metav1.ListOptions{SendInitialEvents: &yes})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	go func() {
		inner.Add(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "default", ResourceVersion: "5"}})
		inner.Action(watch.Bookmark, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "5",
			Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}}})
	}()
	for ev := range w.ResultChan() {
		if ev.Type == watch.Bookmark {
			break
		}
	}
	// The reflector stores what it was sent: longer than the stream's grace.
	time.Sleep(3 * initialStreamGrace)
	ev, ok := <-w.ResultChan()
	if !ok {
		t.Fatal("the stream closed while the reflector was storing its initial events")
	}
	m, _ := meta.Accessor(ev.Object)
	if ev.Type != watch.Bookmark || m.GetResourceVersion() != "5" || m.GetAnnotations()[metav1.InitialEventsAnnotationKey] != "" {
		t.Errorf("next event %s %v, want a plain bookmark at revision 5", ev.Type, m.GetAnnotations())
	}
	if _, ok := <-w.ResultChan(); ok {
		t.Error("the stream goes on after the grace")
	}
}
