// Package auth authenticates API callers with static bearer tokens from a file that is
// reloaded when it changes, and says what each caller may see: clusters (globs) and
// namespaces.
//
// The token file (YAML):
//
//	users:
//	  - name: alice
//	    tokenSHA256: 5e884898da28...   # sha256 hex of the token (preferred), or
//	    token: s3cr3t                  # the token itself
//	    groups: [sre]
//	    clusters: ["prod-*"]           # globs; empty: every cluster
//	    namespaces: [payments, search] # empty: every namespace
package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"sigs.k8s.io/yaml"

	"github.com/fleetcache/fleetcache/internal/filewatch"
	"github.com/fleetcache/fleetcache/internal/glob"
)

// User is an authenticated caller and what it may see. A token file's user sees its
// own entry's clusters and namespaces; a TokenReview user sees the union of the policy
// entries that match its name or groups (its grants).
type User struct {
	Name   string   `json:"name"`
	Groups []string `json:"groups,omitempty"`
	// Clusters are globs of the clusters the user may see; empty means all.
	Clusters []string `json:"clusters,omitempty"`
	// Namespaces the user may see; empty means all. Cluster-scoped objects are visible
	// only to users without a namespace list.
	Namespaces []string `json:"namespaces,omitempty"`

	Token       string `json:"token,omitempty"`
	TokenSHA256 string `json:"tokenSHA256,omitempty"`

	namespaces map[string]bool
	// grants, when set, replace Clusters and Namespaces: the user sees what any of them
	// sees, each grant's namespaces only in that grant's clusters.
	grants []Grant
}

// Grant is one part of a user's view: clusters (globs; empty: all) and, in them,
// namespaces (empty: all, cluster-scoped objects included).
type Grant struct {
	Clusters   []string `json:"clusters,omitempty"`
	Namespaces []string `json:"namespaces,omitempty"`

	namespaces map[string]bool
}

// NewGrant returns a grant of the clusters (globs) and namespaces.
func NewGrant(clusters, namespaces []string) Grant {
	return Grant{Clusters: clusters, Namespaces: namespaces, namespaces: setOf(namespaces)}
}

func (g *Grant) seesCluster(name string) bool {
	if len(g.Clusters) == 0 {
		return true
	}
	for _, p := range g.Clusters {
		if glob.Match(p, name) {
			return true
		}
	}
	return false
}

func (g *Grant) seesNamespace(ns string) bool {
	return len(g.Namespaces) == 0 || g.namespaces[ns]
}

func (g *Grant) restricted() bool { return len(g.Clusters) > 0 || len(g.Namespaces) > 0 }

// NewUser returns a user whose view is the union of grants; with none it sees nothing.
func NewUser(name string, groups []string, grants ...Grant) *User {
	u := &User{Name: name, Groups: groups, grants: make([]Grant, len(grants))}
	for i, g := range grants {
		u.grants[i] = NewGrant(g.Clusters, g.Namespaces)
	}
	return u
}

// Grants returns the user's view as grants (one for a token file's user).
func (u *User) Grants() []Grant {
	if u.grants != nil {
		return append([]Grant(nil), u.grants...)
	}
	return []Grant{NewGrant(u.Clusters, u.Namespaces)}
}

func (u *User) own() Grant {
	return Grant{Clusters: u.Clusters, Namespaces: u.Namespaces, namespaces: u.namespaces}
}

// SeesCluster reports whether the user may see the cluster.
func (u *User) SeesCluster(name string) bool {
	if u == nil {
		return true
	}
	if u.grants == nil {
		g := u.own()
		return g.seesCluster(name)
	}
	for i := range u.grants {
		if u.grants[i].seesCluster(name) {
			return true
		}
	}
	return false
}

// SeesNamespace reports whether the user may see the cluster's objects in the namespace
// ("" for cluster-scoped objects). Set lookups: fast for users with thousands of
// namespaces.
func (u *User) SeesNamespace(cluster, ns string) bool {
	if u == nil {
		return true
	}
	if u.grants == nil {
		g := u.own()
		return g.seesNamespace(ns)
	}
	for i := range u.grants {
		if g := &u.grants[i]; g.seesNamespace(ns) && g.seesCluster(cluster) {
			return true
		}
	}
	return false
}

// NamespacesIn is SeesNamespace for one cluster with the cluster matched against the
// grants once, not per object: a scan over a cluster's objects asks it for each.
func (u *User) NamespacesIn(cluster string) func(ns string) bool {
	if u == nil {
		return func(string) bool { return true }
	}
	if u.grants == nil {
		g := u.own()
		return g.seesNamespace
	}
	var in []*Grant
	for i := range u.grants {
		if u.grants[i].seesCluster(cluster) {
			in = append(in, &u.grants[i])
		}
	}
	return func(ns string) bool {
		for _, g := range in {
			if g.seesNamespace(ns) {
				return true
			}
		}
		return false
	}
}

// Restricted reports whether the user sees less than everything.
func (u *User) Restricted() bool {
	if u == nil {
		return false
	}
	if u.grants == nil {
		return len(u.Clusters) > 0 || len(u.Namespaces) > 0
	}
	for i := range u.grants {
		if !u.grants[i].restricted() {
			return false
		}
	}
	return true
}

type file struct {
	Users []User `json:"users"`
}

// TokenFile holds the users of a token file, reloaded when the file changes.
type TokenFile struct {
	path string

	mu       sync.RWMutex
	byDigest map[[32]byte]*User
	byName   []*User // every entry, also those without a token (scopes for TokenReview users)
	stamp    string
}

// LoadTokenFile reads and validates a token file.
func LoadTokenFile(path string) (*TokenFile, error) {
	t := &TokenFile{path: path}
	if err := t.reload(); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *TokenFile) reload() error {
	raw, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	sum := sha256.Sum256(raw)
	stamp := hex.EncodeToString(sum[:])
	t.mu.RLock()
	same := stamp == t.stamp
	t.mu.RUnlock()
	if same {
		return nil
	}
	var f file
	if err := yaml.UnmarshalStrict(raw, &f); err != nil {
		return fmt.Errorf("token file %s: %w", t.path, err)
	}
	byDigest := map[[32]byte]*User{}
	var byName []*User
	var problems []string
	if len(f.Users) == 0 {
		// Most likely a file caught mid-write (truncated by an editor or `>`): taking it
		// would lock every user out.
		return fmt.Errorf("token file %s lists no users", t.path)
	}
	for i := range f.Users {
		u := &f.Users[i]
		for j, g := range u.Clusters {
			if err := glob.Validate(g); err != nil {
				problems = append(problems, fmt.Sprintf("users[%d].clusters[%d]: %v", i, j, err))
			}
		}
		var digest [32]byte
		switch {
		case u.Name == "":
			problems = append(problems, fmt.Sprintf("users[%d].name: required", i))
			continue
		case u.TokenSHA256 != "":
			b, err := hex.DecodeString(u.TokenSHA256)
			if err != nil || len(b) != 32 {
				problems = append(problems, fmt.Sprintf("users[%d].tokenSHA256: not 64 hex digits", i))
				continue
			}
			copy(digest[:], b)
		case len(u.Token) >= 16:
			digest = sha256.Sum256([]byte(u.Token))
		case u.Token == "":
			// No token: a scope for a user (or "group:<name>") authenticated by TokenReview.
			u.namespaces = setOf(u.Namespaces)
			byName = append(byName, u)
			continue
		default:
			problems = append(problems, fmt.Sprintf("users[%d].token: at least 16 characters", i))
			continue
		}
		if _, dup := byDigest[digest]; dup {
			problems = append(problems, fmt.Sprintf("users[%d]: the same token as another user", i))
		}
		u.namespaces = setOf(u.Namespaces)
		u.Token, u.TokenSHA256 = "", ""
		byDigest[digest] = u
		byName = append(byName, u)
	}
	if len(problems) > 0 {
		return fmt.Errorf("token file %s: %s", t.path, strings.Join(problems, "; "))
	}
	t.mu.Lock()
	t.byDigest, t.byName, t.stamp = byDigest, byName, stamp
	t.mu.Unlock()
	return nil
}

func setOf(list []string) map[string]bool {
	m := make(map[string]bool, len(list))
	for _, s := range list {
		m[s] = true
	}
	return m
}

// Watch reloads the file whenever its contents change (checked every interval) until ctx
// ends. A file that fails to load is logged and the previous users stay in effect.
func (t *TokenFile) Watch(ctx context.Context, interval time.Duration, log *zap.Logger) {
	since := filewatch.StampOf(t.path)
	reload := func() {
		if err := t.reload(); err != nil {
			log.Error("token file not reloaded; keeping the previous users", zap.Error(err))
			return
		}
		t.mu.RLock()
		n := len(t.byDigest)
		t.mu.RUnlock()
		log.Info("token file reloaded", zap.Int("users", n))
	}
	reload() // a change between LoadTokenFile and now
	filewatch.Poll(ctx, interval, since, func() []string { return []string{t.path} }, reload)
}

// ErrUnauthenticated means no valid bearer token.
var ErrUnauthenticated = errors.New("a valid bearer token is required (Authorization: Bearer <token>)")

// Authenticate returns the user whose token the request carries.
func (t *TokenFile) Authenticate(r *http.Request) (*User, error) {
	h := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || token == "" {
		return nil, ErrUnauthenticated
	}
	// Looked up by its SHA-256: the token itself is never compared byte by byte, and the
	// file may hold digests only.
	digest := sha256.Sum256([]byte(strings.TrimSpace(token)))
	t.mu.RLock()
	defer t.mu.RUnlock()
	if u, ok := t.byDigest[digest]; ok {
		return u, nil
	}
	return nil, ErrUnauthenticated
}

type ctxKey struct{}

// WithUser returns ctx carrying the user.
func WithUser(ctx context.Context, u *User) context.Context {
	return context.WithValue(ctx, ctxKey{}, u)
}

// UserFrom returns the request's user; nil when authentication is off.
func UserFrom(ctx context.Context) *User {
	u, _ := ctx.Value(ctxKey{}).(*User)
	return u
}
