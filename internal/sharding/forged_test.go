package sharding

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/internal/auth"
	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// recorder is an HTTP server that records every request it gets.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
}

func newRecorder(t *testing.T) *recorder {
	rec := &recorder{}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, r.Clone(context.Background()))
		rec.mu.Unlock()
	}))
	t.Cleanup(rec.Close)
	return rec
}

func (rec *recorder) requests() []*http.Request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]*http.Request(nil), rec.reqs...)
}

// guarded is a replica's front as the server's guard runs it: authenticate, 401 with the
// error, else the user in the context.
func guarded(authn Authenticator, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, err := authn.Authenticate(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(auth.WithUser(r.Context(), u)))
	})
}

// runMember runs a Membership of group g on client until the test ends.
func runMember(t *testing.T, client kubernetes.Interface, id, address string) *Membership {
	t.Helper()
	m, err := New(Options{Client: client, Namespace: "ns", Group: "g", Identity: id, Address: address, Key: testKey, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return m
}

// TestAForgedLeaseGetsNoRequestAndNoCluster: someone who may write Leases registers a
// recording server as a replica of the group, once without a proof and once with a real
// replica's proof copied. Routed lists, counts, gets, watches, Kubernetes API requests and
// the learning of resources never reach it: it gets no request (so no caller's token),
// owns no cluster, and the real peer it then calls with a forged assertion refuses it.
// The real peer gets the caller's signed identity and never the caller's token.
func TestAForgedLeaseGetsNoRequestAndNoCluster(t *testing.T) {
	client := fake.NewClientset()
	evil := newRecorder(t)

	// b: a real peer, behind the peer authenticator, recording what it is asked.
	bAuth := &PeerAuthenticator{Key: testKey, Self: "b", Inner: tokenAuth{}}
	var bMu sync.Mutex
	var bSaw []string // per request: Authorization, the asserted user
	bReplica := &fakeReplica{objects: map[string][]string{}}
	b := httptest.NewServer(guarded(bAuth, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bMu.Lock()
		name := "<none>"
		if u := auth.UserFrom(r.Context()); u != nil {
			name = u.Name
		}
		bSaw = append(bSaw, r.Header.Get("Authorization")+"|"+name)
		bMu.Unlock()
		bReplica.ServeHTTP(w, r)
	})))
	t.Cleanup(b.Close)

	ma := runMember(t, client, "a", "http://a.invalid")
	runMember(t, client, "b", b.URL)
	leases := client.CoordinationV1().Leases("ns")
	ctx := context.Background()
	if _, err := leases.Create(ctx, lease("g-evil", "evil", evil.URL, "", time.Now()), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testfleet.Eventually(t, 10*time.Second, "a sees b as a member", func() (bool, string) {
		return ma.Joined() && identities(ma.Members()) == "[a b]", identities(ma.Members())
	})
	bLease, err := leases.Get(ctx, "g-b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// b's real proof, copied onto a Lease of the same holder pointing at the recorder.
	if _, err := leases.Create(ctx, lease("g-b-copy", "b", evil.URL, bLease.Annotations[ProofAnnotation], time.Now()), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testfleet.Eventually(t, 10*time.Second, "a refuses both forged Leases", func() (bool, string) {
		return len(ma.Refused()) == 2, fmt.Sprint(ma.Refused())
	})
	if got := identities(ma.Members()); got != "[a b]" {
		t.Fatalf("members %s, want [a b]", got)
	}
	for _, m := range ma.Members() {
		if m.Identity == "b" && m.Address != b.URL {
			t.Fatalf("b's address taken over: %s", m.Address)
		}
	}

	names := names("c", 12)
	src := &Source{Inner: staticSource(names), Owner: ma}
	if _, err := src.Targets(); err != nil {
		t.Fatal(err)
	}
	local := &fakeReplica{objects: map[string][]string{}}
	var bCluster string
	for _, c := range names {
		owners := ma.Owners(c)
		if len(owners) != 1 || (owners[0].Identity != "a" && owners[0].Identity != "b") {
			t.Fatalf("%s is owned by %+v", c, owners)
		}
		fr := local
		if owners[0].Identity == "b" {
			fr, bCluster = bReplica, c
		}
		fr.objects[c] = []string{"ns/o1", "ns/o2"}
	}
	if bCluster == "" {
		t.Fatal("b owns nothing: the test would prove nothing")
	}
	rt := &Router{Source: src, Learn: func(aggregator.ResourceInfo) bool { return false }}
	h := rt.Wrap(local)
	for _, path := range []string{
		"/api/v1/objects?resource=pods&limit=5", "/api/v1/count?resource=pods&groupBy=cluster",
		"/api/v1/objects/" + bCluster + "/pods/ns/o1", "/api/v1/watch?resource=pods",
		"/clusters/" + bCluster + "/api/v1/pods", "/fleet/api/v1/pods",
	} {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Authorization", "Bearer good")
		wctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
		req = req.WithContext(auth.WithUser(wctx, auth.NewUser("alice", nil, auth.Grant{})))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		cancel()
		_, _ = io.Copy(io.Discard, w.Body)
	}
	if got := evil.requests(); len(got) != 0 {
		t.Errorf("the forged replica got %d requests, first %s %s (Authorization %q)", len(got), got[0].Method, got[0].URL, got[0].Header.Get("Authorization"))
	}
	bMu.Lock()
	saw := append([]string(nil), bSaw...)
	bMu.Unlock()
	if len(saw) < 4 {
		t.Errorf("b was asked %d times: the routes were not exercised", len(saw))
	}
	for _, s := range saw {
		if s != "|alice" {
			t.Errorf("b got Authorization|user %q, want no token and alice's signed identity", s)
		}
	}

	// The forged replica calls b, forging an assertion for an administrator.
	for name, header := range map[string]string{
		"another key": Assertion{From: "evil", To: "b", Expires: time.Now().Add(time.Minute).UnixMilli(), User: &PeerUser{Name: "admin"}}.Encode(otherKey),
		"garbage":     "forged",
	} {
		req, _ := http.NewRequest(http.MethodGet, b.URL+"/api/v1/objects?"+url.Values{"local": {"true"}, "resource": {"pods"}, "only": {bCluster}}.Encode(), nil)
		req.Header.Set(PeerHeader, header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), PeerHeader) {
			t.Errorf("%s: HTTP %d %s, want 401 naming %s", name, resp.StatusCode, body, PeerHeader)
		}
	}
	if bAuth.Refused() != 2 {
		t.Errorf("b counted %d refused assertions, want 2", bAuth.Refused())
	}
}
