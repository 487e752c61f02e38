package server

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fleetcache/fleetcache/internal/auth"
	"github.com/fleetcache/fleetcache/internal/request"
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
	// stops reading is disconnected after it. Default: request.Options'.
	StreamWriteTimeout time.Duration
	// ListSeats is how many lists (of either API) are encoded at once; a page larger
	// than 2,000 objects, or a whole list, takes more than one (internal/request's
	// fairness.go). Default: the cores but one, at least 1, so that counts and gets
	// always find a core. Negative: no list admission at all (every list runs at once,
	// on every core).
	ListSeats int
	// ListQueue is how many lists one client (user, or connection when anonymous) may
	// have waiting for a seat; more get 429. Default: request.Options'.
	ListQueue int
	// ListQueueWait is how long a list waits for a seat before it gets 429. Default:
	// request.Options'.
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
}

// public requests answer without authentication: kubelet and load balancers probe them.
// /readyz?verbose is not public: it names every cluster and its errors.
func public(r *http.Request) bool {
	return r.URL.Path == "/healthz" || r.URL.Path == "/readyz" && !r.URL.Query().Has("verbose")
}

// guard authenticates, refuses /metrics to restricted users (its labels name every
// cluster), and applies the in-flight, watch and time limits; list admission is the
// pipeline's (request.Pipeline.List). Its errors are written as the request's face
// writes errors.
func guard(next http.Handler, authn Authenticator, lim Limits, p *request.Pipeline) http.Handler {
	inflight := make(chan struct{}, lim.MaxInFlight)
	var watches atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := request.CheckPath(r); err != nil {
			request.WriteError(w, r, err)
			return
		}
		if public(r) {
			next.ServeHTTP(w, r)
			return
		}
		if authn != nil {
			u, err := authn.Authenticate(r)
			var noPolicy *auth.NoPolicy
			if errors.As(err, &noPolicy) {
				request.WriteError(w, r, request.Failure(http.StatusForbidden, metav1.StatusReasonForbidden, err.Error()))
				return
			}
			if err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="fleetcache"`)
				request.WriteError(w, r, request.Failure(http.StatusUnauthorized, metav1.StatusReasonUnauthorized, err.Error()))
				return
			}
			if r.URL.Path == "/metrics" && u.Restricted() {
				request.WriteError(w, r, request.Failure(http.StatusForbidden, metav1.StatusReasonForbidden, "user "+u.Name+" sees part of the fleet only; /metrics covers all of it"))
				return
			}
			r = r.WithContext(auth.WithUser(r.Context(), u))
		}
		if request.IsWatch(r) {
			if watches.Add(1) > int64(lim.MaxWatches) {
				watches.Add(-1)
				request.WriteError(w, r, request.TooMany{Msg: "too many open watch streams; try again later", RetryAfter: 5})
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
			request.WriteError(w, r, request.TooMany{Msg: "too many requests in flight; try again shortly", RetryAfter: 1})
			return
		}
		defer p.Enter()()
		ctx, cancel := context.WithTimeout(r.Context(), lim.RequestTimeout)
		defer cancel()
		// A client that stops reading is cut off instead of holding its slot.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(lim.RequestTimeout))
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}
