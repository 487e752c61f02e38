package auth

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
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
// client costs one review a minute. Scopes come from Policy entries matching the user's
// name or one of its groups; a user without an entry sees everything.
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
	expires time.Time
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

// scope finds the policy entry of the user, or of its first group that has one.
func (t *TokenReview) scope(name string, groups []string) *User {
	u := &User{Name: name, Groups: groups}
	if t.Policy == nil {
		return u
	}
	t.Policy.mu.RLock()
	defer t.Policy.mu.RUnlock()
	for _, p := range t.Policy.byName {
		if p.Name == name {
			return &User{Name: name, Groups: groups, Clusters: p.Clusters, Namespaces: p.Namespaces, namespaces: p.namespaces}
		}
	}
	for _, g := range groups {
		for _, p := range t.Policy.byName {
			if p.Name == "group:"+g {
				return &User{Name: name, Groups: groups, Clusters: p.Clusters, Namespaces: p.Namespaces, namespaces: p.namespaces}
			}
		}
	}
	return u
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
