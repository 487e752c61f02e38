package clusters

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// scriptedAPI serves configmaps as an apiserver would over JSON, playing a script of
// watch-list streams: each streams the current list (ADDED events, then the
// initial-events-end bookmark), then, for the first one, a 410 ERROR event. Watches
// that resume from a revision stay open until the client goes.
type scriptedAPI struct {
	mu      sync.Mutex
	lists   []*corev1.ConfigMapList
	nStream int
}

func (s *scriptedAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("watch") != "true" {
		s.mu.Lock()
		l := s.lists[min(max(s.nStream-1, 0), len(s.lists)-1)]
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(l)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	send := func(typ watch.EventType, obj any) {
		raw, _ := json.Marshal(obj)
		_ = enc.Encode(metav1.WatchEvent{Type: string(typ), Object: runtime.RawExtension{Raw: raw}})
		w.(http.Flusher).Flush()
	}
	if q.Get("sendInitialEvents") == "true" {
		s.mu.Lock()
		n := s.nStream
		s.nStream++
		l := s.lists[min(n, len(s.lists)-1)]
		s.mu.Unlock()
		for _, cm := range l.Items {
			send(watch.Added, cm)
		}
		send(watch.Bookmark, &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{
			ResourceVersion: l.ResourceVersion, Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}}})
		if n == 0 {
			send(watch.Error, &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure,
				Code: http.StatusGone, Reason: metav1.StatusReasonExpired, Message: "too old resource version"})
			return
		}
	}
	<-r.Context().Done()
}

func cmList(rv string, names ...string) *corev1.ConfigMapList {
	l := &corev1.ConfigMapList{TypeMeta: metav1.TypeMeta{Kind: "ConfigMapList", APIVersion: "v1"}, ListMeta: metav1.ListMeta{ResourceVersion: rv}}
	for _, n := range names {
		l.Items = append(l.Items, corev1.ConfigMap{TypeMeta: metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: "default", ResourceVersion: rv}})
	}
	return l
}

// TestGoneWatchIsCountedAsRelist: a watch ended by 410 Gone makes the reflector list
// again; the counters, which see the stream through client-go's own decoder (no
// forwarding goroutine), record the ERROR event, the watch error and one relist, and
// the cache holds the second list.
func TestGoneWatchIsCountedAsRelist(t *testing.T) {
	api := &scriptedAPI{lists: []*corev1.ConfigMapList{cmList("10", "a"), cmList("20", "a", "b")}}
	rc := startConfigMapCache(t, api, Options{})

	var k Counters
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		k = rc.status().Counters
		return k.Relists >= 1 && rc.objects.Load() == 2, nil
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
	if got := rc.informer.GetStore().ListKeys(); len(got) != 2 {
		t.Errorf("store holds %v, want default/a and default/b", got)
	}
	rc.mu.Lock()
	cacheRV := rc.proof.cacheRV
	rc.mu.Unlock()
	if cacheRV != 20 {
		t.Errorf("cache resourceVersion %d, want 20 from the relist", cacheRV)
	}
}

// TestWatchListGraceStartsWhenTheStoreHoldsTheList: a reflector takes the
// initial-events-end bookmark, stores the initial events (seconds, for a big list on a
// busy machine) and only then reads on. Had the stream ended meanwhile, the reflector
// would take the closed stream for a "very short watch", an error, and list everything
// again (at 1M pods, over and over). So the stream's grace starts when the store holds
// the list (listed), not when the bookmark is decoded, and the stream then ends cleanly
// (EOF), from which the reflector resumes.
func TestWatchListGraceStartsWhenTheStoreHoldsTheList(t *testing.T) {
	c := New(Target{Name: "fake", Config: &rest.Config{}}, Options{})
	rc := &resourceCache{cluster: c, display: "configmaps", requested: "configmaps", done: make(chan struct{}),
		log: c.log, cnt: newCounters(time.Now()), proof: newProof(),
		codec: &codec{gvk: corev1.SchemeGroupVersion.WithKind("ConfigMap")}}
	body, server := io.Pipe()
	defer server.Close()
	st := &stream{rc: rc, initial: true, release: func() {}, cancel: func() {}, start: time.Now()}
	st.fr = &frameReader{ReadCloser: body, st: st}
	rc.stream = st

	rc.observeEvent(&metav1.WatchEvent{Type: string(watch.Bookmark)}) // the initial-events-end bookmark, decoded
	rc.mu.Lock()
	armed := st.timer != nil
	rc.mu.Unlock()
	if armed || st.fr.finishing.Load() {
		t.Fatal("the stream's end is set before the store holds the initial events")
	}

	stored := time.Now()
	rc.listed("5")
	rc.mu.Lock()
	deadline, armed := st.deadline, st.timer != nil
	rc.mu.Unlock()
	if !armed || deadline.Before(stored.Add(initialStreamGrace)) {
		t.Fatalf("after the store holds the list: timer armed %v, deadline %s after it, want %s", armed, deadline.Sub(stored), initialStreamGrace)
	}
	if err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 5*initialStreamGrace, true, func(context.Context) (bool, error) {
		return st.fr.finishing.Load(), nil
	}); err != nil {
		t.Fatal("the stream was not ended after its grace")
	}
	if _, err := st.fr.Read(make([]byte, 8)); err != io.EOF {
		t.Errorf("reading the ended stream: %v, want a clean EOF", err)
	}
}

// startConfigMapCache runs a configmaps cache against api (a scripted apiserver) until
// the test ends.
func startConfigMapCache(t *testing.T, api http.Handler, opts Options) *resourceCache {
	t.Helper()
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	c := New(Target{Name: "fake", Config: &rest.Config{Host: srv.URL}}, opts)
	c.informerClient, c.conn = &rest.Config{Host: srv.URL}, srv.Client()
	rc, err := c.newResourceCache(resolved{
		requested: "configmaps", spec: ResourceSpec{Name: "configmaps"}, namespaced: true,
		gvr: corev1.SchemeGroupVersion.WithResource("configmaps"), gvk: corev1.SchemeGroupVersion.WithKind("ConfigMap"),
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-rc.done })
	rc.start(ctx)
	return rc
}

// countingHandler counts the events an informer delivers, by type and object name.
type countingHandler struct {
	mu     sync.Mutex
	events []string // "ADDED a", "MODIFIED b", "DELETED d"
}

func (h *countingHandler) record(typ string, obj *Object) {
	h.mu.Lock()
	h.events = append(h.events, typ+" "+obj.Name)
	h.mu.Unlock()
}
func (h *countingHandler) OnAdd(_ *InformerRef, obj *Object)       { h.record("ADDED", obj) }
func (h *countingHandler) OnUpdate(_ *InformerRef, _, obj *Object) { h.record("MODIFIED", obj) }
func (h *countingHandler) OnDelete(_ *InformerRef, obj *Object)    { h.record("DELETED", obj) }
func (h *countingHandler) OnStop(*InformerRef)                     {}
func (h *countingHandler) OnFleet(FleetView)                       {}

func (h *countingHandler) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.events
	h.events = nil
	return out
}

// TestRelistSendsOnlyWhatChanged: after a 410 Gone the reflector lists again; objects
// the cache holds at the same resourceVersion make no event, so watchers see only the
// difference (one change, one new object, one deletion), not every object again.
func TestRelistSendsOnlyWhatChanged(t *testing.T) {
	cm := func(name, rv string) corev1.ConfigMap {
		return corev1.ConfigMap{TypeMeta: metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name), ResourceVersion: rv}}
	}
	list := func(rv string, items ...corev1.ConfigMap) *corev1.ConfigMapList {
		return &corev1.ConfigMapList{TypeMeta: metav1.TypeMeta{Kind: "ConfigMapList", APIVersion: "v1"}, ListMeta: metav1.ListMeta{ResourceVersion: rv}, Items: items}
	}
	var first, second []corev1.ConfigMap
	for i := range 1000 {
		first = append(first, cm(fmt.Sprintf("same-%04d", i), "5"))
	}
	second = append(second, first...)
	first = append(first, cm("changed", "6"), cm("gone", "7"))
	second = append(second, cm("changed", "15"), cm("new", "18"))
	api := &scriptedAPI{lists: []*corev1.ConfigMapList{list("10", first...), list("20", second...)}}
	h := &countingHandler{}
	rc := startConfigMapCache(t, api, Options{Handler: h})
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return rc.proof.cacheRV == 20, nil
	})
	if err != nil {
		t.Fatal("the relist never reached the store")
	}
	events := h.take()
	if len(events) != 1002+3 {
		t.Fatalf("%d events, want 1,002 from the first list and 3 from the relist", len(events))
	}
	relist := events[1002:]
	slices.Sort(relist)
	if want := []string{"ADDED new", "DELETED gone", "MODIFIED changed"}; !slices.Equal(relist, want) {
		t.Errorf("the relist sent %v, want only %v", relist, want)
	}
}

// pagedAPI serves configmaps over the list path only: it refuses watch-list streams (as
// an apiserver without the feature does), answers lists in two pages and holds the
// second until the test releases it, and ends the first plain watch with 410 Gone once
// the test says so.
type pagedAPI struct {
	page2     chan chan struct{} // each second-page request hands the test its release
	gone      chan struct{}      // closed: the next plain watch ends with 410
	mu        sync.Mutex
	goneSent  bool
	firstPage []time.Time // when each first page was asked for
}

func (s *pagedAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	switch {
	case q.Get("watch") == "true" && q.Get("sendInitialEvents") == "true":
		w.WriteHeader(http.StatusBadRequest)
		_ = enc.Encode(&metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: 400, Reason: metav1.StatusReasonBadRequest, Message: "sendInitialEvents is not supported"})
	case q.Get("watch") == "true":
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-s.gone:
		case <-r.Context().Done():
			return
		}
		s.mu.Lock()
		first := !s.goneSent
		s.goneSent = true
		s.mu.Unlock()
		if first {
			raw, _ := json.Marshal(&metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: http.StatusGone, Reason: metav1.StatusReasonExpired, Message: "too old resource version"})
			_ = enc.Encode(metav1.WatchEvent{Type: string(watch.Error), Object: runtime.RawExtension{Raw: raw}})
			return
		}
		<-r.Context().Done()
	case q.Get("continue") == "":
		s.mu.Lock()
		s.firstPage = append(s.firstPage, time.Now())
		s.mu.Unlock()
		l := cmList("10", "a", "b")
		l.Continue = "page-2"
		_ = enc.Encode(l)
	default:
		release := make(chan struct{})
		select {
		case s.page2 <- release:
		case <-r.Context().Done():
			return
		}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_ = enc.Encode(cmList("10", "c", "d"))
	}
}

// TestListPathProvesOnceTheStoreHoldsTheList: on the list path (no watch-list), a page
// proves nothing. While the second page is outstanding the cache is not proven (first
// list) or keeps its older proof (relist); once the store holds both pages, the proof
// is the first page's send time, and a relist of two pages counts once.
func TestListPathProvesOnceTheStoreHoldsTheList(t *testing.T) {
	api := &pagedAPI{page2: make(chan chan struct{}), gone: make(chan struct{})}
	rc := startConfigMapCache(t, api, Options{})
	state := func() (time.Time, Counters) {
		rc.mu.Lock()
		provenAt := rc.proof.provenAt
		rc.mu.Unlock()
		return provenAt, rc.status().Counters
	}
	waitPage2 := func() chan struct{} {
		select {
		case release := <-api.page2:
			return release
		case <-time.After(30 * time.Second):
			t.Fatal("the second page was never asked for")
			return nil
		}
	}

	// The first list, its second page outstanding: the first page proves nothing.
	release := waitPage2()
	if provenAt, k := state(); !provenAt.IsZero() || k.Relists != 0 {
		t.Errorf("with one page of two in: proven at %v, %d relists; want unproven, 0", provenAt, k.Relists)
	}
	close(release)
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return rc.informer.HasSynced() && rc.objects.Load() == 4, nil
	})
	if err != nil {
		t.Fatal("the list never reached the store")
	}
	proven, k := state()
	api.mu.Lock()
	firstPage := api.firstPage[0]
	api.mu.Unlock()
	if proven.IsZero() || proven.After(firstPage) || k.Relists != 0 {
		t.Errorf("after the list: proven at %v (first page asked for at %v), %d relists; want proven no later than the first page, 0 relists", proven, firstPage, k.Relists)
	}

	// A relist (410 on the watch): until its last page is in, the older proof stands.
	close(api.gone)
	release = waitPage2()
	if provenAt, k := state(); !provenAt.Equal(proven) || k.Relists != 0 {
		t.Errorf("relist with one page of two in: proven at %v, %d relists; want %v (the first list's), 0", provenAt, k.Relists, proven)
	}
	close(release)
	err = wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		_, k := state()
		return k.Relists == 1, nil
	})
	if err != nil {
		_, k := state()
		t.Fatalf("relists %d, want 1 (two pages are one list)", k.Relists)
	}
	if provenAt, _ := state(); !provenAt.After(proven) {
		t.Errorf("after the relist: proven at %v, want later than %v", provenAt, proven)
	}
}

// refusingAPI serves configmaps on the list path: it answers every watch-list request
// with refuse, lists in one page, and holds plain watches open, silent, until the client
// goes.
type refusingAPI struct {
	refuse func(w http.ResponseWriter)
}

func (s refusingAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case q.Get("watch") == "true" && q.Get("sendInitialEvents") == "true":
		s.refuse(w)
	case q.Get("watch") == "true":
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	default:
		_ = json.NewEncoder(w).Encode(cmList("10", "a", "b"))
	}
}

// refusal answers as a kube-apiserver refuses a watch-list request: 422 Invalid on the
// request's ListOptions, naming field (v1.32.13 with WatchList=false, the body copied
// from its answer: sendInitialEvents; before 1.27: resourceVersionMatch).
func refusal(field, message string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.WriteHeader(http.StatusUnprocessableEntity)
		_ = json.NewEncoder(w).Encode(&metav1.Status{
			TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: http.StatusUnprocessableEntity,
			Reason:  metav1.StatusReasonInvalid,
			Message: fmt.Sprintf("ListOptions.meta.k8s.io \"\" is invalid: %s: Forbidden: %s", field, message),
			Details: &metav1.StatusDetails{Group: "meta.k8s.io", Kind: "ListOptions", Causes: []metav1.StatusCause{
				{Type: metav1.CauseType("FieldValueForbidden"), Message: "Forbidden: " + message, Field: field}}},
		})
	}
}

// failure answers a watch-list request with an error that is not a refusal.
func failure(code int, reason metav1.StatusReason) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(&metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure,
			Code: int32(code), Reason: reason, Message: "it broke"})
	}
}

// TestRefusedWatchListIsAFallbackNotAnError: an apiserver that does not serve watch-list
// streams refuses each one (422, naming sendInitialEvents); the reflector lists instead.
// That is how an old cluster is synced, every time, not a failure: the resource never
// passes through an error reason, no list or watch error is counted, the refusal is
// counted as a fallback, its status says it came by LIST, and the refused stream does
// not pass for the list (no bookmark or event recorded: none came). A watch-list stream
// that fails otherwise is still an error.
func TestRefusedWatchListIsAFallbackNotAnError(t *testing.T) {
	for _, tc := range []struct {
		name     string
		refuse   func(http.ResponseWriter)
		fallback bool
	}{
		{"v1.32 WatchList off", refusal("sendInitialEvents", "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"), true},
		{"before v1.27", refusal("resourceVersionMatch", "resourceVersionMatch is forbidden for watch"), true},
		{"invalid, another field", refusal("labelSelector", "not a selector"), false},
		{"500", failure(http.StatusInternalServerError, metav1.StatusReasonInternalError), false},
		{"400", failure(http.StatusBadRequest, metav1.StatusReasonBadRequest), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			rc := startConfigMapCache(t, refusingAPI{tc.refuse}, Options{Logger: zap.New(core)})
			err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
				return rc.informer.HasSynced() && rc.objects.Load() == 2, nil
			})
			if err != nil {
				t.Fatal("the list never reached the store")
			}
			s := rc.status()
			k := s.Counters
			var reasons []string
			for _, e := range logs.FilterMessage("resource phase changed").All() {
				reasons = append(reasons, fmt.Sprintf("%v/%v", e.ContextMap()["phase"], e.ContextMap()["reason"]))
			}
			if s.ListPath != ListPathList || k.Lists != 1 && tc.fallback {
				t.Errorf("list path %q, %d lists; want %q, 1 (the LIST; a refused stream is no list)", s.ListPath, k.Lists, ListPathList)
			}
			if s.LastEventTime != nil || k.LastBookmarkTime != nil {
				t.Errorf("last event %v, last bookmark %v: none came (the plain watch is silent)", s.LastEventTime, k.LastBookmarkTime)
			}
			if !tc.fallback {
				if k.WatchListFallbacks != 0 || k.ListErrors < 1 || k.WatchErrors < 1 || !slices.Contains(reasons, "Syncing/Error") {
					t.Errorf("fallbacks %d, list errors %d, watch errors %d, phases %v: want 0, >= 1, >= 1 and Syncing/Error (a failure, not a refusal)",
						k.WatchListFallbacks, k.ListErrors, k.WatchErrors, reasons)
				}
				return
			}
			if k.WatchListFallbacks != 1 || k.ListErrors != 0 || k.WatchErrors != 0 {
				t.Errorf("fallbacks %d, list errors %d, watch errors %d: want 1, 0, 0", k.WatchListFallbacks, k.ListErrors, k.WatchErrors)
			}
			if want := []string{"Syncing/<nil>", "Synced/<nil>"}; !slices.Equal(reasons, want) && !slices.Equal(reasons, want[1:]) {
				t.Errorf("phases %v, want %v: a refused watch-list is no error", reasons, want)
			}
		})
	}
}
