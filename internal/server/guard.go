package server

import (
	"context"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/internal/auth"
	"github.com/fleetcache/fleetcache/internal/wire"
)

// Authenticator finds the caller of a request.
type Authenticator interface {
	Authenticate(r *http.Request) (*auth.User, error)
}

// Limits protect the daemon and its other clients from any one client. Zero values mean
// the defaults.
type Limits struct {
	// MaxInFlight caps concurrent requests (watch streams excluded); more get 429.
	// Default 256.
	MaxInFlight int
	// MaxWatches caps open watch streams; more get 429. Default 1000.
	MaxWatches int
	// RequestTimeout bounds a request's work and writing its answer (watch streams
	// excluded). A client that reads too slowly is cut off. Default 60s.
	RequestTimeout time.Duration
	// StreamWriteTimeout bounds writing one event of a watch stream: a client that
	// stops reading is disconnected after it. Default 10s.
	StreamWriteTimeout time.Duration
	// ListSeats is how many list pages (of either API) are encoded at once; a page
	// larger than 2,000 objects takes more than one (see fairness.go). Default: the
	// cores but one, at least 1, so that counts and gets always find a core. Negative:
	// no list admission at all (every list runs at once, on every core).
	ListSeats int
	// ListQueue is how many lists one client (user, or connection when anonymous) may
	// have waiting for a seat; more get 429. Default 64.
	ListQueue int
	// ListQueueWait is how long a list waits for a seat before it gets 429. Default 30s.
	ListQueueWait time.Duration
}

func (l *Limits) setDefaults() {
	if l.MaxInFlight == 0 {
		l.MaxInFlight = 256
	}
	if l.MaxWatches == 0 {
		l.MaxWatches = 1000
	}
	if l.RequestTimeout == 0 {
		l.RequestTimeout = 60 * time.Second
	}
	if l.StreamWriteTimeout == 0 {
		l.StreamWriteTimeout = 10 * time.Second
	}
	if l.ListSeats == 0 {
		l.ListSeats = defaultListSeats()
	}
	if l.ListQueue == 0 {
		l.ListQueue = 64
	}
	if l.ListQueueWait == 0 {
		l.ListQueueWait = 30 * time.Second
	}
}

// public paths answer without authentication: kubelet and load balancers probe them.
func public(path string) bool { return path == "/healthz" || path == "/readyz" }

func isWatch(r *http.Request) bool {
	if r.URL.Path == "/api/v1/watch" {
		return true
	}
	w := r.URL.Query().Get("watch")
	return (strings.HasPrefix(r.URL.Path, "/fleet/") || strings.HasPrefix(r.URL.Path, "/clusters/")) && (w == "true" || w == "1")
}

// guard authenticates, applies the limits, and refuses /metrics to restricted users
// (its labels name every cluster).
func guard(next http.Handler, authn Authenticator, lim Limits) http.Handler {
	inflight := make(chan struct{}, lim.MaxInFlight)
	var watches atomic.Int64
	lists := newFairQueue(lim.ListSeats, lim.ListQueue)
	// cheap counts the requests running outside the list seats: while any does, lists
	// encode on one core.
	var cheap atomic.Int64
	parallelism := func() int {
		if cheap.Load() > 0 || lists.waiting.Load() > 0 {
			return 1
		}
		return runtime.GOMAXPROCS(0)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if public(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		if authn != nil {
			u, err := authn.Authenticate(r)
			if err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="fleetcache"`)
				writeError(w, http.StatusUnauthorized, "Unauthorized", err.Error())
				return
			}
			if r.URL.Path == "/metrics" && u.Restricted() {
				writeError(w, http.StatusForbidden, "Forbidden", "user "+u.Name+" sees part of the fleet only; /metrics covers all of it")
				return
			}
			r = r.WithContext(auth.WithUser(r.Context(), u))
		}
		if isWatch(r) {
			if watches.Add(1) > int64(lim.MaxWatches) {
				watches.Add(-1)
				w.Header().Set("Retry-After", "5")
				writeError(w, http.StatusTooManyRequests, "TooManyRequests", "too many open watch streams; try again later")
				return
			}
			defer watches.Add(-1)
			next.ServeHTTP(w, r)
			return
		}
		select {
		case inflight <- struct{}{}:
			defer func() { <-inflight }()
		default:
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusTooManyRequests, "TooManyRequests", "too many requests in flight; try again shortly")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), lim.RequestTimeout)
		defer cancel()
		if width := listWidth(r, lim.ListSeats); width > 0 && lim.ListSeats > 0 {
			release, err := lists.acquire(ctx, flowOf(r), width, lim.ListQueueWait)
			if err != nil {
				w.Header().Set("Retry-After", "1")
				writeError(w, http.StatusTooManyRequests, "TooManyRequests", "list not served: "+err.Error()+"; try again shortly")
				return
			}
			defer release()
			ctx = wire.WithParallelism(ctx, parallelism)
		} else {
			cheap.Add(1)
			defer cheap.Add(-1)
		}
		// A client that stops reading is cut off instead of holding its slot.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(lim.RequestTimeout))
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// scopeOf returns the caller's scope for queries, nil for an unrestricted caller.
func scopeOf(r *http.Request) aggregator.Scope {
	if u := auth.UserFrom(r.Context()); u.Restricted() {
		return u
	}
	return nil
}
