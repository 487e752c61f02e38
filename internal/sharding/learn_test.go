package sharding

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/internal/auth"
)

// A replica learns its peers' resources on behalf of the caller before it answers the
// first request, skips a failing peer, and asks again only after learnEvery. The peer gets
// the caller's identity signed with the group key, never the caller's token.
func TestLearnsThePeersResourcesBeforeTheFirstAnswer(t *testing.T) {
	var asked atomic.Int32
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		if r.Header.Get("Authorization") != "" {
			t.Errorf("the caller's credentials reached a peer: %q", r.Header.Get("Authorization"))
		}
		a, err := VerifyAssertion(testKey, r.Header.Get(PeerHeader), "b", time.Now())
		if err != nil || a.From != "a" || a.User == nil || a.User.Name != "alice" || len(a.User.Grants) != 1 || fmt.Sprint(a.User.Grants[0].Clusters) != "[c*]" {
			t.Errorf("the peer was not told who asks: %+v, %v", a, err)
		}
		if r.URL.Path != "/api/v1/resources" || err != nil || r.Header.Get(routedHeader) == "" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"resources": []aggregator.ResourceInfo{{Name: "widgets.example.com", Kind: "Widget", APIVersion: "example.com/v1"}}})
	}))
	t.Cleanup(peer.Close)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "broken", http.StatusInternalServerError)
	}))
	t.Cleanup(broken.Close)
	m, err := New(Options{Client: fake.NewClientset(), Namespace: "ns", Identity: "a", Address: "http://a", Key: testKey, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	m.members, m.synced, m.lastRenewed = []Member{{Identity: "a", Address: "http://a"}, {Identity: "b", Address: peer.URL}, {Identity: "c", Address: broken.URL}}, true, time.Now()
	var mu sync.Mutex
	learnt := map[string]bool{}
	rt := &Router{Source: &Source{Inner: staticSource(nil), Owner: m}, Learn: func(info aggregator.ResourceInfo) bool {
		mu.Lock()
		defer mu.Unlock()
		isNew := !learnt[info.Name]
		learnt[info.Name] = true
		return isNew
	}}
	var sawWidgets []bool
	h := rt.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sawWidgets = append(sawWidgets, learnt["widgets.example.com"])
		mu.Unlock()
	}))
	get := func(path string) {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Authorization", "Bearer t")
		req = req.WithContext(auth.WithUser(req.Context(), auth.NewUser("alice", nil, auth.NewGrant([]string{"c*"}, nil))))
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	get("/fleet/apis")
	get("/api/v1/resources")
	if len(sawWidgets) != 2 || !sawWidgets[0] {
		t.Errorf("the first answer was written before the peers' resources were learnt: %v", sawWidgets)
	}
	if n := asked.Load(); n != 1 {
		t.Errorf("the peer was asked %d times within learnEvery, want 1", n)
	}
	// Paths that name no resource learn nothing.
	rt.learner.mu.Lock()
	rt.learner.last = time.Time{}
	rt.learner.mu.Unlock()
	get("/metrics")
	if n := asked.Load(); n != 1 {
		t.Errorf("/metrics asked the peer: %d requests", n)
	}
}
