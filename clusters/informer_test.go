package clusters

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
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
