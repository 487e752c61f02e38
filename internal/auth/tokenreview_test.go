package auth

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
)

// reviewer is a fake home apiserver answering TokenReviews: tokens maps a token to its
// user; down makes it answer 503.
type reviewer struct {
	mu        sync.Mutex
	tokens    map[string]authenticationv1.UserInfo
	reviews   int
	audiences []string
	down      bool
}

func (f *reviewer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
		http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
		return
	}
	// Decoded as an apiserver would: client-go sends protobuf (or JSON).
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var tr authenticationv1.TokenReview
	if _, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, &tr); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.reviews++
	f.audiences = tr.Spec.Audiences
	u, ok := f.tokens[tr.Spec.Token]
	down := f.down
	f.mu.Unlock()
	if down {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"down","reason":"ServiceUnavailable","code":503}`))
		return
	}
	tr.APIVersion, tr.Kind = "authentication.k8s.io/v1", "TokenReview"
	tr.Status = authenticationv1.TokenReviewStatus{Authenticated: ok, User: u}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(&tr)
}

func (f *reviewer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reviews
}

func TestTokenReview(t *testing.T) {
	fake := &reviewer{tokens: map[string]authenticationv1.UserInfo{
		"sa-token":    {Username: "system:serviceaccount:ops:robot", Groups: []string{"system:serviceaccounts", "viewers"}},
		"alice-token": {Username: "alice", Groups: []string{"viewers"}},
		"dave-token":  {Username: "dave", Groups: []string{"devs"}},
	}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	policy, err := LoadTokenFile(tokenFile(t, `users:
  - name: alice
    clusters: ["prod-*"]
  - name: group:viewers
    namespaces: [default]
`))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTokenReview(&rest.Config{Host: srv.URL}, []string{"fleetcache"})
	if err != nil {
		t.Fatal(err)
	}
	tr.Policy = policy

	// A user matching several entries sees their union: her own entry's clusters whole,
	// and her group's namespace everywhere; each entry's namespaces only in its clusters.
	u, err := authenticate(tr, "Bearer alice-token")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cluster, ns string
		want        bool
	}{
		{"prod-eu", "kube-system", true}, {"prod-eu", "", true}, // her entry: all of prod-*
		{"dev", "default", true},                          // the viewers group: default everywhere
		{"dev", "kube-system", false}, {"dev", "", false}, // not the union of clusters × namespaces
	} {
		if got := u.SeesNamespace(c.cluster, c.ns); got != c.want {
			t.Errorf("alice sees %s/%q: %v, want %v", c.cluster, c.ns, got, c.want)
		}
		if got := u.NamespacesIn(c.cluster)(c.ns); got != c.want {
			t.Errorf("alice's scan of %s sees %q: %v, want %v", c.cluster, c.ns, got, c.want)
		}
	}
	if u.Name != "alice" || !u.SeesCluster("dev") || !u.SeesCluster("prod-eu") || !u.Restricted() {
		t.Errorf("alice: %+v, want clusters prod-* and dev (through viewers), restricted", u)
	}
	if strings.Join(fake.audiences, ",") != "fleetcache" {
		t.Errorf("review sent audiences %v, want [fleetcache]", fake.audiences)
	}
	// A service account gets its group's scope.
	u, err = authenticate(tr, "Bearer sa-token")
	if err != nil {
		t.Fatal(err)
	}
	if u.Name != "system:serviceaccount:ops:robot" || !u.SeesNamespace("any-cluster", "default") || u.SeesNamespace("any-cluster", "ops") || !u.SeesCluster("dev") {
		t.Errorf("service account: %+v, want the viewers group's scope (namespace default)", u)
	}
	// An authenticated user without an entry is refused, by name (default deny).
	var noPolicy *NoPolicy
	if u, err = authenticate(tr, "Bearer dave-token"); !errors.As(err, &noPolicy) || u != nil {
		t.Errorf("dave: %+v, %v; want refused: no policy entry", u, err)
	} else if !strings.Contains(err.Error(), `"dave"`) || !strings.Contains(err.Error(), "group:system:authenticated") {
		t.Errorf("dave's refusal %q should name him and the catch-all entry", err)
	}
	if _, err := authenticate(tr, "Bearer dave-token"); !errors.As(err, &noPolicy) {
		t.Errorf("dave again (cached): %v, want refused", err)
	}
	if _, err := authenticate(tr, "Bearer wrong"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("rejected token: %v, want ErrUnauthenticated", err)
	}
	if _, err := authenticate(tr, ""); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("no token: %v, want ErrUnauthenticated", err)
	}

	// Answers, accepted and rejected, are cached: no new reviews.
	n := fake.count()
	if n != 4 {
		t.Errorf("%d reviews for 4 tokens (the request without a token needs none)", n)
	}
	for _, tok := range []string{"alice-token", "sa-token", "wrong"} {
		_, _ = authenticate(tr, "Bearer "+tok)
	}
	if got := fake.count(); got != n {
		t.Errorf("%d reviews after repeating cached tokens, want %d", got, n)
	}

	// A failing home cluster is an error (not ErrUnauthenticated: the token may be good),
	// and is not cached.
	fake.mu.Lock()
	fake.down = true
	fake.mu.Unlock()
	_, err = authenticate(tr, "Bearer new-token")
	if err == nil || errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "token review failed") {
		t.Errorf("home cluster down: %v, want a token review failure", err)
	}
	fake.mu.Lock()
	fake.down = false
	fake.tokens["new-token"] = authenticationv1.UserInfo{Username: "erin", Groups: []string{"viewers"}}
	fake.mu.Unlock()
	if u, err := authenticate(tr, "Bearer new-token"); err != nil || u.Name != "erin" {
		t.Errorf("after the home cluster is back: %v, %v; want erin", u, err)
	}
}

func TestChainTriesEachAuthenticator(t *testing.T) {
	files, err := LoadTokenFile(tokenFile(t, validFile))
	if err != nil {
		t.Fatal(err)
	}
	fake := &reviewer{tokens: map[string]authenticationv1.UserInfo{
		"sa-token": {Username: "robot", Groups: []string{"system:authenticated"}},
	}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	tr, err := NewTokenReview(&rest.Config{Host: srv.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	chain := Chain{files, tr}
	// No policy at all: every reviewed identity is refused, by name.
	var noPolicy *NoPolicy
	if _, err := authenticate(chain, "Bearer sa-token"); !errors.As(err, &noPolicy) || noPolicy.User != "robot" {
		t.Errorf("reviewed token without a policy: %v, want refused (no entry for robot)", err)
	}
	// The explicit catch-all lets every authenticated identity in, unrestricted.
	if tr.Policy, err = LoadTokenFile(tokenFile(t, "users:\n  - name: group:system:authenticated\n")); err != nil {
		t.Fatal(err)
	}
	tr.mu.Lock()
	clear(tr.cache)
	tr.mu.Unlock()
	if u, err := authenticate(chain, "Bearer "+aliceToken); err != nil || u.Name != "alice" {
		t.Errorf("file token through the chain: %v, %v", u, err)
	}
	if u, err := authenticate(chain, "Bearer sa-token"); err != nil || u.Name != "robot" || u.Restricted() {
		t.Errorf("reviewed token through the chain: %v, %v; want robot, unrestricted (catch-all)", u, err)
	}
	if _, err := authenticate(chain, "Bearer nobody-knows-this"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("unknown token through the chain: %v, want ErrUnauthenticated", err)
	}
	if _, err := authenticate(Chain{}, "Bearer x"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("empty chain: %v, want ErrUnauthenticated", err)
	}
}
