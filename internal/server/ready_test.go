package server

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/auth"
)

// fakeFleet answers readiness questions from fixed values.
type fakeFleet struct {
	loaded  bool
	loadErr error
	ready   []clusters.Readiness
}

func (f fakeFleet) Status() []clusters.ClusterStatus { return nil }
func (f fakeFleet) Readiness() []clusters.Readiness  { return f.ready }
func (f fakeFleet) Loaded() bool                     { return f.loaded }
func (f fakeFleet) LoadError() error                 { return f.loadErr }

func cluster(name string, synced, ever, settled bool) clusters.Readiness {
	phase := clusters.PhaseSyncing
	if synced {
		phase = clusters.PhaseSynced
	}
	return clusters.Readiness{Name: name, Condition: clusters.Condition{Phase: phase}, Synced: synced, EverSynced: ever, Settled: settled}
}

func TestReadinessMeansData(t *testing.T) {
	synced := cluster("a", true, true, true)
	gaveUp := cluster("b", false, false, true) // initialSyncTimeout passed, never synced
	syncing := cluster("c", false, false, false)
	lost := cluster("d", false, true, true) // synced once, unreachable now
	for _, tc := range []struct {
		name   string
		policy ReadyPolicy
		fleet  fakeFleet
		want   bool
		line   string
	}{
		{"source not read yet", ReadyPolicy{}, fakeFleet{}, false, "not loaded yet"},
		{"source failed to load", ReadyPolicy{}, fakeFleet{loadErr: errors.New("no such file")}, false, "no such file"},
		{"no clusters", ReadyPolicy{}, fakeFleet{loaded: true}, false, "no clusters"},
		{"no clusters, allowed", ReadyPolicy{AllowEmpty: true}, fakeFleet{loaded: true}, true, "allowEmpty"},
		{"all: one still syncing", ReadyPolicy{}, fakeFleet{loaded: true, ready: []clusters.Readiness{synced, syncing}}, false, "[-]cluster c"},
		{"all: settled, one synced", ReadyPolicy{}, fakeFleet{loaded: true, ready: []clusters.Readiness{synced, gaveUp}}, true, "[+]cluster a"},
		{"all: settled, none ever synced", ReadyPolicy{}, fakeFleet{loaded: true, ready: []clusters.Readiness{gaveUp}}, false, "[-]cluster b"},
		{"all: synced once, stale now", ReadyPolicy{Mode: "all"}, fakeFleet{loaded: true, ready: []clusters.Readiness{lost}}, true, "[-]cluster d"},
		{"any", ReadyPolicy{Mode: "any"}, fakeFleet{loaded: true, ready: []clusters.Readiness{lost, synced}}, true, "[+]cluster a"},
		{"any: none synced now", ReadyPolicy{Mode: "any"}, fakeFleet{loaded: true, ready: []clusters.Readiness{lost}}, false, "[-]cluster d"},
		{"quorum: 1 of 2", ReadyPolicy{Mode: "quorum"}, fakeFleet{loaded: true, ready: []clusters.Readiness{synced, lost}}, false, ""},
		{"atLeast 1", ReadyPolicy{Mode: "atLeast", Min: 1}, fakeFleet{loaded: true, ready: []clusters.Readiness{synced, lost}}, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, lines := ready(tc.policy, tc.fleet, nil)
			if got != tc.want {
				t.Errorf("ready = %v, want %v (%v)", got, tc.want, lines)
			}
			if !strings.Contains(strings.Join(lines, "\n"), tc.line) {
				t.Errorf("lines %q do not say %q", lines, tc.line)
			}
		})
	}
}

// /readyz stays a bare status for probes; ?verbose names clusters and their errors, so
// it needs what /api/v1/clusters needs: credentials when the server authenticates (and
// then only the caller's clusters), or a caller on loopback when it does not.
func TestReadyzVerboseFollowsAuthentication(t *testing.T) {
	fleet := fakeFleet{loaded: true, ready: []clusters.Readiness{
		{Name: "prod-a", Condition: clusters.Condition{Phase: clusters.PhaseSynced, Message: "https://10.0.0.1:6443"}, Synced: true, EverSynced: true, Settled: true},
		{Name: "dev-b", Condition: clusters.Condition{Phase: clusters.PhaseUnreachable, Message: "dial tcp 10.0.0.2:6443: refused"}, Settled: true},
	}}
	tokens := writeTokens(t, "users:\n  - {name: admin, token: admin-token-0123456789}\n  - {name: prod, token: prod-token-01234567890, clusters: [\"prod-*\"]}\n")
	secured := New(Options{Fleet: fleet, Authenticator: tokens})
	open := New(Options{Fleet: fleet})
	get := func(h http.Handler, remote, target, token string) (int, string) {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		r.RemoteAddr = remote
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	const outside, local = "203.0.113.9:5555", "127.0.0.1:5555"
	for _, tc := range []struct {
		name           string
		h              http.Handler
		remote, target string
		token          string
		code           int
		names          []string // clusters the answer must name; every other must be absent
	}{
		{"probe, secured", secured, outside, "/readyz", "", http.StatusOK, nil},
		{"verbose without credentials", secured, outside, "/readyz?verbose", "", http.StatusUnauthorized, nil},
		{"verbose without credentials, from loopback", secured, local, "/readyz?verbose", "", http.StatusUnauthorized, nil},
		{"verbose, admin", secured, outside, "/readyz?verbose", "admin-token-0123456789", http.StatusOK, []string{"prod-a", "dev-b"}},
		{"verbose, a user of prod-*", secured, outside, "/readyz?verbose", "prod-token-01234567890", http.StatusOK, []string{"prod-a"}},
		{"verbose, no authentication, from outside", open, outside, "/readyz?verbose", "", http.StatusOK, nil},
		{"verbose, no authentication, from loopback", open, local, "/readyz?verbose", "", http.StatusOK, []string{"prod-a", "dev-b"}},
	} {
		code, body := get(tc.h, tc.remote, tc.target, tc.token)
		if code != tc.code {
			t.Errorf("%s: %d, want %d\n%s", tc.name, code, tc.code, body)
		}
		for _, c := range []string{"prod-a", "dev-b"} {
			want := slices.Contains(tc.names, c)
			if strings.Contains(body, c) != want {
				t.Errorf("%s: names %s: %v, want %v\n%s", tc.name, c, !want, want, body)
			}
		}
		if len(tc.names) < 2 && strings.Contains(body, "10.0.0.2") {
			t.Errorf("%s: the answer carries a hidden cluster's error\n%s", tc.name, body)
		}
	}
}

// The kubeconfig's load error names files and contexts: only the whole view shows it.
func TestReadyzLoadErrorOnlyForTheWholeView(t *testing.T) {
	fleet := fakeFleet{loadErr: errors.New("kubeconfig /etc/fleet/prod-secret.yaml: context prod-db: bad certificate")}
	_, whole := ready(ReadyPolicy{}, fleet, nil)
	_, part := ready(ReadyPolicy{}, fleet, func(string) bool { return false })
	if !strings.Contains(strings.Join(whole, "\n"), "prod-secret.yaml") {
		t.Errorf("the whole view hides the load error: %v", whole)
	}
	if strings.Contains(strings.Join(part, "\n"), "prod") {
		t.Errorf("a partial view shows the load error: %v", part)
	}
}

func writeTokens(t *testing.T, content string) *auth.TokenFile {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	tf, err := auth.LoadTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return tf
}
