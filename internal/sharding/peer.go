package sharding

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/fleetcache/fleetcache/internal/auth"
)

// A replica asks its peers for the clusters they cache on behalf of its caller, and the
// peer must answer within the caller's scope. The caller's bearer token must not travel:
// it would be handed to whatever address a Lease names, and a peer needs the caller's
// identity, not its credentials. So a replica sends, instead of Authorization, an
// assertion signed with the group key: who the caller is (as this replica authenticated
// it), which replica asserts it, which replica it is for, and until when.

// PeerHeader carries a replica-to-replica request's assertion (Assertion.Encode).
const PeerHeader = "X-Fleetcache-Peer"

// AssertionTTL is how long an assertion is accepted after it was made. Each request is
// given a fresh one, and a watch's is checked once, when it starts: the lifetime only
// bounds the replay of a captured header. It also absorbs the clock skew between
// replicas.
const AssertionTTL = time.Minute

// Assertion is what a replica tells a peer about a routed request.
type Assertion struct {
	// From and To are the identities of the asserting replica and of the one the request
	// is for; a peer accepts only assertions made out to itself.
	From string `json:"from"`
	To   string `json:"to"`
	// Expires is in Unix milliseconds.
	Expires int64 `json:"exp"`
	// User is the caller as the asserting replica authenticated it; nil when that replica
	// serves without authentication.
	User *PeerUser `json:"user,omitempty"`
}

// PeerUser is the part of an auth.User a peer needs: the identity and its view, as
// grants (a TokenReview user's is the union of several policy entries).
type PeerUser struct {
	Name   string       `json:"name"`
	Groups []string     `json:"groups,omitempty"`
	Grants []auth.Grant `json:"grants"`
}

func peerUserOf(u *auth.User) *PeerUser {
	if u == nil {
		return nil
	}
	return &PeerUser{Name: u.Name, Groups: u.Groups, Grants: u.Grants()}
}

// ErrPeerAssertion is the error of every refused assertion.
var ErrPeerAssertion = errors.New(PeerHeader)

// assertionPurpose separates the assertions' signatures from every other use of the key.
const assertionPurpose = "fleetcache-peer\x00"

// Encode signs a: base64url(JSON) "." base64url(HMAC).
func (a Assertion) Encode(k *GroupKey) string {
	payload, _ := json.Marshal(a)
	sig := k.Sign(append([]byte(assertionPurpose), payload...))
	return base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// VerifyAssertion returns the assertion s carries when its signature holds under k, it is
// made out to audience and has not expired at now.
func VerifyAssertion(k *GroupKey, s, audience string, now time.Time) (Assertion, error) {
	var a Assertion
	p, sg, ok := strings.Cut(s, ".")
	payload, err1 := base64.RawURLEncoding.DecodeString(p)
	sig, err2 := base64.RawURLEncoding.DecodeString(sg)
	if !ok || err1 != nil || err2 != nil {
		return a, fmt.Errorf("%w: malformed (not base64url payload.signature)", ErrPeerAssertion)
	}
	if !k.Verify(append([]byte(assertionPurpose), payload...), sig) {
		return a, fmt.Errorf("%w: the signature does not match this group's key (forged, altered, or from a replica of another group)", ErrPeerAssertion)
	}
	if err := json.Unmarshal(payload, &a); err != nil {
		return a, fmt.Errorf("%w: malformed payload: %v", ErrPeerAssertion, err)
	}
	if a.To != audience {
		return a, fmt.Errorf("%w: made out to replica %q, not to this one (%q)", ErrPeerAssertion, a.To, audience)
	}
	if exp := time.UnixMilli(a.Expires); !now.Before(exp) {
		return a, fmt.Errorf("%w: expired %s ago", ErrPeerAssertion, now.Sub(exp).Round(time.Millisecond))
	}
	if a.User != nil && a.User.Name == "" {
		return a, fmt.Errorf("%w: a user without a name", ErrPeerAssertion)
	}
	return a, nil
}

// setPeerHeaders makes req, a request to peer to for the caller of r, carry the caller's
// assertion and none of the caller's credentials.
func setPeerHeaders(req, r *http.Request, k *GroupKey, self string, to Member) {
	req.Header.Del("Authorization")
	a := Assertion{From: self, To: to.Identity, Expires: time.Now().Add(AssertionTTL).UnixMilli(), User: peerUserOf(auth.UserFrom(r.Context()))}
	req.Header.Set(PeerHeader, a.Encode(k))
}

// Authenticator finds the caller of a request (internal/server's, which this package
// cannot import).
type Authenticator interface {
	Authenticate(r *http.Request) (*auth.User, error)
}

// PeerAuthenticator authenticates the requests of the group's replicas by their
// assertion (PeerHeader), and every other request with Inner. A request carrying the
// header is decided by the header alone: it is refused unless the assertion holds, and it
// may not carry a bearer token as well (a token could otherwise widen, or stand in for,
// what the assertion says).
type PeerAuthenticator struct {
	Key *GroupKey
	// Self is this replica's identity: the audience its peers' assertions must name.
	Self string
	// Inner authenticates callers; nil when the daemon serves without authentication, and
	// then a request without the header is let through as anyone's (a nil user).
	Inner  Authenticator
	Logger *zap.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time

	refused atomic.Uint64
	logMu   sync.Mutex
	logged  time.Time // when a refusal was last logged
	quiet   int       // refusals not logged since
}

// Authenticate implements the server's Authenticator.
func (p *PeerAuthenticator) Authenticate(r *http.Request) (*auth.User, error) {
	h := r.Header.Get(PeerHeader)
	if h == "" && len(r.Header.Values(PeerHeader)) == 0 {
		if p.Inner == nil {
			return nil, nil
		}
		return p.Inner.Authenticate(r)
	}
	u, err := p.peer(r, h)
	if err != nil {
		p.refuse(r, err)
		return nil, err
	}
	return u, nil
}

func (p *PeerAuthenticator) peer(r *http.Request, h string) (*auth.User, error) {
	if len(r.Header.Values(PeerHeader)) != 1 {
		return nil, fmt.Errorf("%w: given more than once", ErrPeerAssertion)
	}
	if r.Header.Get("Authorization") != "" {
		return nil, fmt.Errorf("%w: a request with an assertion carries no Authorization (replicas never forward credentials)", ErrPeerAssertion)
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	a, err := VerifyAssertion(p.Key, h, p.Self, now())
	if err != nil {
		return nil, err
	}
	if a.User == nil {
		if p.Inner != nil {
			return nil, fmt.Errorf("%w: replica %s serves without authentication and asserts no user; this replica authenticates its callers", ErrPeerAssertion, a.From)
		}
		return nil, nil
	}
	return auth.NewUser(a.User.Name, a.User.Groups, a.User.Grants...), nil
}

// refuse counts a refused assertion and logs it, at most once every 10 seconds: whoever
// sends forged assertions should not fill the log.
func (p *PeerAuthenticator) refuse(r *http.Request, err error) {
	p.refused.Add(1)
	if p.Logger == nil {
		return
	}
	p.logMu.Lock()
	defer p.logMu.Unlock()
	if time.Since(p.logged) < 10*time.Second {
		p.quiet++
		return
	}
	p.Logger.Warn("refused a replica-to-replica request: its assertion does not hold",
		zap.String("remote", r.RemoteAddr), zap.String("path", r.URL.Path), zap.Error(err), zap.Int("alsoRefusedSinceLastLog", p.quiet))
	p.logged, p.quiet = time.Now(), 0
}

// Refused counts the requests refused for their assertion.
func (p *PeerAuthenticator) Refused() uint64 { return p.refused.Load() }
