package sharding

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetcache/fleetcache/internal/auth"
)

func assertionFor(to string, exp time.Time, u *PeerUser) Assertion {
	return Assertion{From: "a", To: to, Expires: exp.UnixMilli(), User: u}
}

func TestAssertionsHoldOnlyAsSigned(t *testing.T) {
	now := time.UnixMilli(time.Now().UnixMilli()) // expiries are in milliseconds
	alice := &PeerUser{Name: "alice", Groups: []string{"sre"}, Grants: []auth.Grant{auth.NewGrant([]string{"prod-*"}, []string{"pay"})}}
	good := assertionFor("b", now.Add(AssertionTTL), alice).Encode(testKey)
	a, err := VerifyAssertion(testKey, good, "b", now)
	if err != nil || a.From != "a" || a.User.Name != "alice" || a.User.Grants[0].Clusters[0] != "prod-*" || a.User.Grants[0].Namespaces[0] != "pay" || a.User.Groups[0] != "sre" {
		t.Fatalf("a good assertion: %+v, %v", a, err)
	}
	payload, sig, _ := strings.Cut(good, ".")
	// The same claims with a wider scope: the signature no longer matches.
	raw, _ := base64.RawURLEncoding.DecodeString(payload)
	var widened Assertion
	_ = json.Unmarshal(raw, &widened)
	widened.User.Grants = []auth.Grant{{}}
	wraw, _ := json.Marshal(widened)
	tamperedPayload := base64.RawURLEncoding.EncodeToString(wraw) + "." + sig
	rawSig, _ := base64.RawURLEncoding.DecodeString(sig)
	rawSig[3] ^= 1 // in the bytes: a flipped character may fall outside base64url
	flipped := base64.RawURLEncoding.EncodeToString(rawSig)
	for name, tc := range map[string]struct {
		header, audience string
		now              time.Time
		want             string
	}{
		"tampered payload":   {tamperedPayload, "b", now, "signature does not match"},
		"tampered signature": {payload + "." + flipped, "b", now, "signature does not match"},
		"another key":        {assertionFor("b", now.Add(AssertionTTL), alice).Encode(otherKey), "b", now, "signature does not match"},
		"expired":            {good, "b", now.Add(AssertionTTL + time.Second), "expired 1s ago"},
		"wrong audience":     {good, "c", now, `made out to replica "b", not to this one ("c")`},
		"malformed":          {"not-an-assertion", "b", now, "malformed"},
		"empty":              {"", "b", now, "malformed"},
		"nameless user":      {assertionFor("b", now.Add(AssertionTTL), &PeerUser{}).Encode(testKey), "b", now, "without a name"},
	} {
		_, err := VerifyAssertion(testKey, tc.header, tc.audience, tc.now)
		if !errors.Is(err, ErrPeerAssertion) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}

// tokenAuth accepts "Bearer good" as alice (unrestricted).
type tokenAuth struct{}

func (tokenAuth) Authenticate(r *http.Request) (*auth.User, error) {
	if r.Header.Get("Authorization") == "Bearer good" {
		return auth.NewUser("alice", nil, auth.Grant{}), nil
	}
	return nil, auth.ErrUnauthenticated
}

func TestPeerAuthenticator(t *testing.T) {
	now := time.Now()
	req := func(peer, bearer string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/api/v1/objects?local=true", nil)
		if peer != "" {
			r.Header.Set(PeerHeader, peer)
		}
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		return r
	}
	team := &PeerUser{Name: "team", Grants: []auth.Grant{auth.NewGrant([]string{"ctx-1"}, []string{"pay"})}}
	valid := assertionFor("b", now.Add(AssertionTTL), team).Encode(testKey)
	anonymous := assertionFor("b", now.Add(AssertionTTL), nil).Encode(testKey)
	forged := assertionFor("b", now.Add(AssertionTTL), &PeerUser{Name: "admin"}).Encode(otherKey)

	withAuth := &PeerAuthenticator{Key: testKey, Self: "b", Inner: tokenAuth{}, Now: func() time.Time { return now }}
	u, err := withAuth.Authenticate(req(valid, ""))
	if err != nil || u.Name != "team" || !u.Restricted() || u.SeesCluster("ctx-2") || !u.SeesNamespace("ctx-1", "pay") || u.SeesNamespace("ctx-1", "other") {
		t.Errorf("a valid assertion: %+v, %v; want team's scope", u, err)
	}
	if u, err := withAuth.Authenticate(req("", "good")); err != nil || u.Name != "alice" {
		t.Errorf("a caller's own token: %+v, %v", u, err)
	}
	for name, r := range map[string]*http.Request{
		"forged":                                    req(forged, ""),
		"valid, with a token as well":               req(valid, "good"),
		"forged, with a token as well":              req(forged, "good"),
		"no user, while this replica authenticates": req(anonymous, ""),
		"empty header":                              req("", ""),
	} {
		if name == "empty header" {
			r.Header[PeerHeader] = []string{""}
		}
		if u, err := withAuth.Authenticate(r); err == nil || !errors.Is(err, ErrPeerAssertion) {
			t.Errorf("%s: %+v, %v; want refused", name, u, err)
		}
	}
	if n := withAuth.Refused(); n != 5 {
		t.Errorf("%d refusals counted, want 5", n)
	}

	// Without authentication, peers still prove the key.
	open := &PeerAuthenticator{Key: testKey, Self: "b", Now: func() time.Time { return now }}
	if u, err := open.Authenticate(req("", "")); u != nil || err != nil {
		t.Errorf("no header, no authentication: %+v, %v; want anyone's", u, err)
	}
	if u, err := open.Authenticate(req(anonymous, "")); u != nil || err != nil {
		t.Errorf("an unauthenticated peer's assertion: %+v, %v", u, err)
	}
	if u, err := open.Authenticate(req(valid, "")); err != nil || u.Name != "team" || !u.Restricted() {
		t.Errorf("an authenticated peer's assertion keeps its scope: %+v, %v", u, err)
	}
	if _, err := open.Authenticate(req(forged, "")); err == nil {
		t.Error("a forged assertion passed where there is no authentication")
	}
}

// The router's client trusts sharding.peerCAFile's CA besides the system's roots.
func TestPeerClientTrustsThePeerCA(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	t.Cleanup(srv.Close)
	if resp, err := PeerClient(nil).Get(srv.URL); err == nil {
		resp.Body.Close()
		t.Fatal("a peer with a certificate of an unknown CA was trusted")
	}
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	_ = os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	pool, err := LoadPeerCA(caFile)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := PeerClient(pool).Get(srv.URL)
	if err != nil {
		t.Fatalf("with the peer CA: %v", err)
	}
	resp.Body.Close()
	notPEM := filepath.Join(dir, "not.pem")
	_ = os.WriteFile(notPEM, []byte("hello"), 0o600)
	for _, f := range []string{notPEM, filepath.Join(dir, "missing.pem")} {
		if _, err := LoadPeerCA(f); err == nil || !strings.Contains(err.Error(), "sharding.peerCAFile") {
			t.Errorf("%s: %v", f, err)
		}
	}
}
