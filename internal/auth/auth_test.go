package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/fleetcache/fleetcache/internal/testfleet"
)

const (
	aliceToken = "alice-token-0123456789"
	bobToken   = "bob-token-abcdefghijkl"
)

func sha(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// replaceFile replaces path's content atomically (write, then rename), as a Secret volume
// update does. A plain rewrite is not used: a reload can read the file truncated, and an
// empty token file is accepted as "no users" (reported to the lead).
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func tokenFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	writeFile(t, path, content)
	return path
}

func authenticate(tf interface {
	Authenticate(r *http.Request) (*User, error)
}, authz string) (*User, error) {
	r := httptest.NewRequest("GET", "/api/v1/clusters", nil)
	if authz != "" {
		r.Header.Set("Authorization", authz)
	}
	return tf.Authenticate(r)
}

var validFile = `users:
  - name: alice
    token: ` + aliceToken + `
    groups: [sre]
    clusters: ["prod-*", "staging"]
    namespaces: [payments, search]
  - name: bob
    tokenSHA256: ` + sha(bobToken) + `
  - name: group:viewers
    namespaces: [default]
`

func TestLoadTokenFileAndAuthenticate(t *testing.T) {
	tf, err := LoadTokenFile(tokenFile(t, validFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, authz, user string
	}{
		{"plain token", "Bearer " + aliceToken, "alice"},
		{"token given by its sha256 in the file", "Bearer " + bobToken, "bob"},
		{"trailing space around the token", "Bearer " + aliceToken + " ", "alice"},
		{"no header", "", ""},
		{"not a bearer token", "Basic " + aliceToken, ""},
		{"empty bearer token", "Bearer ", ""},
		{"unknown token", "Bearer not-a-known-token-at-all", ""},
		{"the digest is not the token", "Bearer " + sha(bobToken), ""},
		{"lower-case scheme", "bearer " + aliceToken, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := authenticate(tf, tc.authz)
			if tc.user == "" {
				if !errors.Is(err, ErrUnauthenticated) || u != nil {
					t.Fatalf("got user %v, err %v; want ErrUnauthenticated", u, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.Name != tc.user {
				t.Fatalf("user %q, want %q", u.Name, tc.user)
			}
			if u.Token != "" || u.TokenSHA256 != "" {
				t.Errorf("the authenticated user carries its token (%q, %q)", u.Token, u.TokenSHA256)
			}
		})
	}
	alice, err := authenticate(tf, "Bearer "+aliceToken)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(alice.Groups, ",") != "sre" || !alice.SeesNamespace("any-cluster", "search") || alice.SeesNamespace("any-cluster", "default") || !alice.SeesCluster("prod-eu") {
		t.Errorf("alice's scope not loaded from the file: %+v", alice)
	}
}

func TestLoadTokenFileRejectsBadEntries(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		want          []string // substrings of the error
	}{
		{"missing name", "users:\n  - token: " + aliceToken + "\n", []string{"users[0].name: required"}},
		{"short token", "users:\n  - name: a\n    token: short\n", []string{"users[0].token: at least 16 characters"}},
		{"digest not hex", "users:\n  - name: a\n    tokenSHA256: xyz\n", []string{"users[0].tokenSHA256: not 64 hex digits"}},
		{"digest too short", "users:\n  - name: a\n    tokenSHA256: abcd\n", []string{"users[0].tokenSHA256: not 64 hex digits"}},
		{"bad cluster glob", "users:\n  - name: a\n    token: " + aliceToken + "\n    clusters: [\"prod-[\"]\n", []string{"users[0].clusters[0]:"}},
		{"same token twice", "users:\n  - name: a\n    token: " + aliceToken + "\n  - name: b\n    tokenSHA256: " + sha(aliceToken) + "\n", []string{"users[1]: the same token as another user"}},
		{"unknown field", "users:\n  - name: a\n    tokn: " + aliceToken + "\n", []string{`unknown field "tokn"`}},
		{"not YAML", "users: [\n", []string{"tokens.yaml"}},
		{"every problem at once", "users:\n  - token: " + aliceToken + "\n  - name: b\n    token: short\n", []string{"users[0].name: required", "users[1].token: at least 16 characters"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tokenFile(t, tc.content)
			tf, err := LoadTokenFile(path)
			if err == nil {
				t.Fatalf("loaded (%d users); want an error", len(tf.byName))
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	if _, err := LoadTokenFile(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want an error wrapping ErrNotExist", err)
	}
}

func TestTokenFileWatchReloadsAndKeepsUsersOnABadFile(t *testing.T) {
	path := tokenFile(t, validFile)
	tf, err := LoadTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tf.Watch(ctx, 10*time.Millisecond, zap.New(core)); close(done) }()
	defer func() { cancel(); <-done }()

	// Bob's token is revoked, carol's added.
	carol := "carol-token-0123456789"
	replaceFile(t, path, "users:\n  - name: alice\n    token: "+aliceToken+"\n  - name: carol\n    token: "+carol+"\n")
	testfleet.Eventually(t, 5*time.Second, "new token file in effect", func() (bool, string) {
		u, err := authenticate(tf, "Bearer "+carol)
		if err != nil {
			return false, "carol: " + err.Error()
		}
		if _, err := authenticate(tf, "Bearer "+bobToken); err == nil {
			return false, "bob still authenticates"
		}
		return u.Name == "carol", "carol is " + u.Name
	})
	if logs.FilterMessage("token file reloaded").Len() == 0 {
		t.Error("no log of the reload")
	}
	// alice's scope went away with the new file.
	if u, _ := authenticate(tf, "Bearer "+aliceToken); u == nil || u.Restricted() {
		t.Errorf("alice after reload: %+v, want unrestricted", u)
	}

	// A broken file is logged and the previous users stay.
	replaceFile(t, path, "users:\n  - name: carol\n    token: short\n")
	testfleet.Eventually(t, 5*time.Second, "broken token file reported", func() (bool, string) {
		return logs.FilterMessage("token file not reloaded; keeping the previous users").Len() > 0, "no error logged"
	})
	for _, tok := range []string{aliceToken, carol} {
		if _, err := authenticate(tf, "Bearer "+tok); err != nil {
			t.Errorf("a broken file dropped a user: %v", err)
		}
	}
	if got := logs.FilterMessage("token file not reloaded; keeping the previous users").All()[0].ContextMap()["error"]; !strings.Contains(got.(string), "users[0].token: at least 16 characters") {
		t.Errorf("logged error %q does not say what is wrong", got)
	}
}

func TestUserScope(t *testing.T) {
	var nobody *User // authentication off
	if !nobody.SeesCluster("any") || !nobody.SeesNamespace("any-cluster", "any") || nobody.Restricted() {
		t.Error("a nil user must see everything")
	}
	tf, err := LoadTokenFile(tokenFile(t, validFile))
	if err != nil {
		t.Fatal(err)
	}
	alice, _ := authenticate(tf, "Bearer "+aliceToken)
	bob, _ := authenticate(tf, "Bearer "+bobToken)
	if alice == nil || bob == nil {
		t.Fatal("fixture users did not authenticate")
	}
	for _, tc := range []struct {
		cluster string
		want    bool
	}{
		{"prod-eu", true},
		{"prod-", true},
		{"staging", true},
		{"staging-2", false},
		{"dev", false},
		{"preprod-eu", false},
	} {
		if got := alice.SeesCluster(tc.cluster); got != tc.want {
			t.Errorf("alice (clusters prod-*, staging) sees cluster %q: %v, want %v", tc.cluster, got, tc.want)
		}
		if !bob.SeesCluster(tc.cluster) {
			t.Errorf("bob (no cluster list) does not see %q", tc.cluster)
		}
	}
	for _, tc := range []struct {
		ns   string
		want bool
	}{
		{"payments", true},
		{"search", true},
		{"pay*", false}, // namespaces are names, not globs
		{"default", false},
		{"", false}, // cluster-scoped objects: only for users without a namespace list
	} {
		if got := alice.SeesNamespace("any-cluster", tc.ns); got != tc.want {
			t.Errorf("alice sees namespace %q: %v, want %v", tc.ns, got, tc.want)
		}
		if !bob.SeesNamespace("any-cluster", tc.ns) {
			t.Errorf("bob (no namespace list) does not see namespace %q", tc.ns)
		}
	}
	if !alice.Restricted() || bob.Restricted() {
		t.Errorf("Restricted: alice %v (want true), bob %v (want false)", alice.Restricted(), bob.Restricted())
	}
	onlyClusters := &User{Name: "c", Clusters: []string{"x"}}
	if !onlyClusters.Restricted() {
		t.Error("a user with a cluster list only is not Restricted")
	}
}

func TestUserFromContext(t *testing.T) {
	if UserFrom(context.Background()) != nil {
		t.Error("a user in an empty context")
	}
	u := &User{Name: "alice"}
	if got := UserFrom(WithUser(context.Background(), u)); got != u {
		t.Errorf("UserFrom = %v, want %v", got, u)
	}
}

// TestTokenFileRefusesEmptyAndBadScopes: a file with no users (one caught mid-write)
// would lock everyone out, and a malformed cluster glob in a token-less scope would make
// its user see nothing: both are refused with a clear error.
func TestTokenFileRefusesEmptyAndBadScopes(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"empty":     "",
		"no users":  "users: []\n",
		"bad scope": "users:\n- name: group:ops\n  clusters: [\"prod-[\"]\n",
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadTokenFile(path)
		if err == nil {
			t.Errorf("%s: loaded without error", name)
			continue
		}
		if name == "bad scope" && !strings.Contains(err.Error(), "users[0].clusters[0]") {
			t.Errorf("%s: error does not name the entry: %v", name, err)
		}
	}
}
