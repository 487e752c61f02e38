package auth

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// TokenReview authenticates bearer tokens by asking a home cluster's apiserver
// (authentication.k8s.io TokenReview), as kubelet and kube-rbac-proxy do: service-account
// tokens and whatever else that cluster accepts. Answers are cached briefly, so a busy
// client costs one review a minute. A user's view is the union of the Policy entries
// that match its name or one of its groups ("group:<name>"); a user that no entry
// matches is refused (403), whoever authenticated it: every pod's ServiceAccount token
// authenticates, and must not read the fleet by that alone. An entry for
// "group:system:authenticated" (every authenticated user's group) is the explicit
// catch-all.
type TokenReview struct {
	client    kubernetes.Interface
	audiences []string
	timeout   time.Duration
	// Policy holds per-user and per-group scopes (users without tokens); nil: none.
	Policy *TokenFile

	mu    sync.Mutex
	cache map[[32]byte]reviewed
}

type reviewed struct {
	user    *User
	err     error // authenticated without a policy entry
	expires time.Time
}

// NoPolicy refuses an identity the home cluster authenticated but no policy entry names:
// the server answers it with 403.
type NoPolicy struct {
	User   string
	Groups []string
}

func (e *NoPolicy) Error() string {
	return fmt.Sprintf("user %q (groups %v) is authenticated but has no entry in the token file's policy: add one named %q or \"group:<one of its groups>\" (\"group:system:authenticated\" lets every authenticated identity in)",
		e.User, e.Groups, e.User)
}

const (
	reviewTTL         = time.Minute
	rejectedReviewTTL = 10 * time.Second
)

// NewTokenReview reviews tokens against the cluster cfg reaches; its credentials need
// create on tokenreviews.authentication.k8s.io.
func NewTokenReview(cfg *rest.Config, audiences []string) (*TokenReview, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = 10 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &TokenReview{client: cs, audiences: audiences, timeout: 10 * time.Second, cache: map[[32]byte]reviewed{}}, nil
}

// Authenticate implements the server's Authenticator.
func (t *TokenReview) Authenticate(r *http.Request) (*User, error) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return nil, ErrUnauthenticated
	}
	key := sha256.Sum256([]byte(token))
	now := time.Now()
	t.mu.Lock()
	if c, ok := t.cache[key]; ok && now.Before(c.expires) {
		t.mu.Unlock()
		if c.err != nil {
			return nil, c.err
		}
		if c.user == nil {
			return nil, ErrUnauthenticated
		}
		return c.user, nil
	}
	t.mu.Unlock()

	ctx, cancel := context.WithTimeout(r.Context(), t.timeout)
	defer cancel()
	res, err := t.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: t.audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		// Not cached: the home cluster being down must not lock callers out for long.
		return nil, fmt.Errorf("token review failed: %w", err)
	}
	var u *User
	ttl := rejectedReviewTTL
	if res.Status.Authenticated {
		u = t.scope(res.Status.User.Username, res.Status.User.Groups)
		ttl = reviewTTL
	}
	if u != nil && len(u.grants) == 0 {
		// Authenticated, but no entry: cached as such (the policy is read again at expiry).
		err := &NoPolicy{User: u.Name, Groups: u.Groups}
		t.mu.Lock()
		t.cache[key] = reviewed{err: err, expires: now.Add(ttl)}
		t.mu.Unlock()
		return nil, err
	}
	t.mu.Lock()
	if len(t.cache) > 10000 {
		clear(t.cache) // bounded: a flood of bad tokens cannot grow it forever
	}
	t.cache[key] = reviewed{user: u, expires: now.Add(ttl)}
	t.mu.Unlock()
	if u == nil {
		return nil, ErrUnauthenticated
	}
	return u, nil
}

// scope returns the user with the union of the policy entries matching its name or one
// of its groups as grants; none when no entry matches.
func (t *TokenReview) scope(name string, groups []string) *User {
	var grants []Grant
	if t.Policy != nil {
		t.Policy.mu.RLock()
		for _, p := range t.Policy.byName {
			if matchesIdentity(p.Name, name, groups) {
				grants = append(grants, p.own())
			}
		}
		t.Policy.mu.RUnlock()
	}
	return NewUser(name, groups, grants...)
}

// matchesIdentity reports whether a policy entry's name is the user or "group:" one of
// its groups.
func matchesIdentity(entry, name string, groups []string) bool {
	if entry == name {
		return true
	}
	g, ok := strings.CutPrefix(entry, "group:")
	return ok && slices.Contains(groups, g)
}

// Chain tries authenticators in order; the first that knows the token wins.
type Chain []interface {
	Authenticate(r *http.Request) (*User, error)
}

// Authenticate implements the server's Authenticator.
func (c Chain) Authenticate(r *http.Request) (*User, error) {
	var last error = ErrUnauthenticated
	for _, a := range c {
		u, err := a.Authenticate(r)
		if err == nil {
			return u, nil
		}
		last = err
	}
	return nil, last
}
