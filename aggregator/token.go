package aggregator

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Errors callers branch on (the HTTP layer maps them to status codes).
var (
	// ErrUnknownResource: no cluster serves (or the configuration does not cache) it.
	ErrUnknownResource = errors.New("unknown resource")
	// ErrUnknownCluster: the cluster is not in the fleet.
	ErrUnknownCluster = errors.New("unknown cluster")
	// ErrNotFound: no such object.
	ErrNotFound = errors.New("not found")
	// ErrInvalidToken: a continue token or cursor that this server did not issue, that
	// was altered, or that belongs to another query.
	ErrInvalidToken = errors.New("invalid token")
	// ErrExpired: a continue token older than its lifetime, or a cursor older than the
	// retained history: start again from a fresh list.
	ErrExpired = errors.New("expired")
)

// DefaultContinueTTL is how long a continue token stays valid. Paging resumes by key, so
// an old token would still be correct; the limit bounds how stale a client's view can get.
const DefaultContinueTTL = 15 * time.Minute

// tokenKey signs tokens so that a forged or edited one is refused. It is random per
// process (tokens do not survive a restart) unless SetTokenKey gives one that a group of
// processes shares.
var tokenKey atomic.Pointer[[]byte]

func init() {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic(err)
	}
	tokenKey.Store(&k)
}

// SetTokenKey makes this process sign and verify continue tokens (and SignToken's) with
// key instead of its random one: sharded replicas set a key derived from their group's,
// so that a page begun through one replica continues through any other. Tokens signed
// before no longer verify; call it at start.
func SetTokenKey(key []byte) {
	k := append([]byte(nil), key...)
	tokenKey.Store(&k)
}

type continueToken struct {
	Query   string `json:"q"` // hash of the query the token pages through
	Cluster string `json:"c"`
	Key     string `json:"k"` // last key returned in that cluster
	Issued  int64  `json:"t"`
}

func sign(payload []byte) string {
	mac := hmac.New(sha256.New, *tokenKey.Load())
	mac.Write(payload)
	return base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)[:16])
}

func verify(token string) ([]byte, error) {
	var payload, sig []byte
	for i := len(token) - 1; i >= 0; i-- {
		if token[i] == '.' {
			var err1, err2 error
			payload, err1 = base64.RawURLEncoding.DecodeString(token[:i])
			sig, err2 = base64.RawURLEncoding.DecodeString(token[i+1:])
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("%w: not a token this server issues", ErrInvalidToken)
			}
			break
		}
	}
	if payload == nil {
		return nil, fmt.Errorf("%w: not a token this server issues", ErrInvalidToken)
	}
	mac := hmac.New(sha256.New, *tokenKey.Load())
	mac.Write(payload)
	if !hmac.Equal(sig, mac.Sum(nil)[:16]) {
		return nil, fmt.Errorf("%w: signature does not match (altered, or issued by another fleetcache process or before a restart)", ErrInvalidToken)
	}
	return payload, nil
}

func encodeContinue(t continueToken) string {
	raw, _ := json.Marshal(t)
	return sign(raw)
}

func decodeContinue(token, queryHash string, now time.Time, ttl time.Duration) (continueToken, error) {
	var t continueToken
	raw, err := verify(token)
	if err != nil {
		return t, err
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return t, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if t.Query != queryHash {
		return t, fmt.Errorf("%w: the continue token was issued for a different query (resource, clusters, namespace and selectors must stay the same)", ErrInvalidToken)
	}
	if age := now.Sub(time.Unix(t.Issued, 0)); age > ttl {
		return t, fmt.Errorf("%w: the continue token is %s old, older than %s; list again from the start", ErrExpired, age.Round(time.Second), ttl)
	}
	return t, nil
}

// Cursor is a position in a watch: per cluster, the resourceVersion of the last event
// delivered. A watch started from a cursor delivers every later event.
type Cursor map[string]uint64

// cursorEpoch names this process in every cursor it issues. A restarted fleetcache has
// an empty history: it has not seen the changes made while it was down (deletions
// above all), so it cannot resume another process's position and says ErrExpired.
var cursorEpoch = func() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}()

type cursorJSON struct {
	Epoch     string            `json:"e"`
	Positions map[string]uint64 `json:"p"`
}

// Encode returns the cursor as an opaque string, valid with this process only.
func (c Cursor) Encode() string {
	raw, _ := json.Marshal(cursorJSON{Epoch: cursorEpoch, Positions: c})
	return base64.RawURLEncoding.EncodeToString(raw)
}

// ParseCursor reads a cursor from Encode. One issued by another fleetcache process (or
// before a restart) is ErrExpired: list again and watch from there.
func ParseCursor(s string) (Cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: cursor is not base64url: %v", ErrInvalidToken, err)
	}
	var c cursorJSON
	if err := json.Unmarshal(raw, &c); err != nil || c.Positions == nil {
		return nil, fmt.Errorf("%w: not a cursor this server issues", ErrInvalidToken)
	}
	if c.Epoch != cursorEpoch {
		return nil, fmt.Errorf("%w: the cursor was issued by another fleetcache process or before a restart, which did not see the changes made meanwhile; list again and watch from the new list", ErrExpired)
	}
	return Cursor(c.Positions), nil
}

// DecodeCursor reads a cursor Encode made in any fleetcache process, with that process's
// epoch: a sharding router keeps the positions each replica issued and hands them back to
// that replica (EncodeFor), which alone can resume from them.
func DecodeCursor(s string) (epoch string, c Cursor, err error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return "", nil, fmt.Errorf("%w: cursor is not base64url: %v", ErrInvalidToken, err)
	}
	var cj cursorJSON
	if err := json.Unmarshal(raw, &cj); err != nil || cj.Positions == nil {
		return "", nil, fmt.Errorf("%w: not a cursor fleetcache issues", ErrInvalidToken)
	}
	return cj.Epoch, Cursor(cj.Positions), nil
}

// EncodeFor encodes the cursor as the process with epoch (from DecodeCursor) issues it.
func (c Cursor) EncodeFor(epoch string) string {
	raw, _ := json.Marshal(cursorJSON{Epoch: epoch, Positions: c})
	return base64.RawURLEncoding.EncodeToString(raw)
}

// SignToken signs payload with this process's token key, for other opaque tokens the
// process hands out (a sharding router's continue tokens).
func SignToken(payload []byte) string { return sign(payload) }

// VerifyToken returns the payload of a token SignToken made in this process; otherwise
// ErrInvalidToken.
func VerifyToken(token string) ([]byte, error) { return verify(token) }
