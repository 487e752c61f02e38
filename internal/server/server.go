// Package server is fleetcache's HTTP front: the JSON API under /api/v1, /metrics,
// /healthz and /readyz, on one listener. docs/api.md is its reference.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/kubeapi"
	"github.com/fleetcache/fleetcache/internal/sharding"
)

// Fleet is what the server needs of the clusters.
type Fleet interface {
	Status() []clusters.ClusterStatus
	Readiness() []clusters.Readiness
	Loaded() bool
	LoadError() error
}

// Options configure the handler. Zero values mean defaults.
type Options struct {
	Fleet Fleet
	// Sharding, when set, adds the replica group's view to /api/v1/clusters.
	Sharding interface{ Status() sharding.Status }
	// Route, when set, wraps the API routes behind authentication (the sharding router,
	// which answers for clusters other replicas cache).
	Route    func(http.Handler) http.Handler
	Index    *aggregator.Index
	Gatherer prometheus.Gatherer
	Logger   *zap.Logger
	// DefaultLimit is the page size when a request gives none. Default 500.
	DefaultLimit int
	// MaxLimit is the largest page size a request may ask for. Default 5000.
	MaxLimit int
	// MaxResponseBytes cuts a page short (with a continue token) once its encoded items
	// reach this size. Default 32 MiB.
	MaxResponseBytes int
	// Ready is the /readyz policy.
	Ready ReadyPolicy
	// Registerer receives the HTTP request metrics. Nil: none.
	Registerer prometheus.Registerer
	// KubeAPI, when set, serves the Kubernetes read API under /clusters/ and /fleet/.
	KubeAPI *kubeapi.Handler
	// Authenticator, when set, is required for everything but /healthz and /readyz.
	Authenticator Authenticator
	Limits        Limits
	// ServeSecrets allows Secrets (always without values) to be served. Default: refused.
	ServeSecrets bool
}

// Server is the daemon's HTTP handler.
type Server struct {
	http.Handler
	endStreams context.CancelFunc
}

// EndStreams ends every open watch stream cleanly (for graceful shutdown: http.Server's
// Shutdown waits for them otherwise) and makes new ones end at once.
func (s *Server) EndStreams() { s.endStreams() }

// New returns the daemon's HTTP handler.
func New(opts Options) *Server {
	if opts.DefaultLimit == 0 {
		opts.DefaultLimit = 500
	}
	if opts.MaxLimit == 0 {
		opts.MaxLimit = 5000
	}
	if opts.MaxResponseBytes == 0 {
		opts.MaxResponseBytes = 32 << 20
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	opts.Limits.setDefaults()
	streams, endStreams := context.WithCancel(context.Background())
	a := &api{opts: opts, ix: opts.Index, streams: streams}
	m := newHTTPMetrics(opts.Registerer)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	if opts.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	}
	mux.Handle("GET /api/v1/clusters", m.instrument("clusters", a.clusters))
	if a.ix != nil {
		mux.Handle("GET /api/v1/resources", m.instrument("resources", a.resources))
		mux.Handle("GET /api/v1/objects", m.instrument("objects", a.list))
		mux.Handle("GET /api/v1/objects/{cluster}/{resource}/{namespace}/{name}", m.instrument("object", a.get))
		mux.Handle("GET /api/v1/count", m.instrument("count", a.count))
		mux.Handle("GET /api/v1/watch", m.instrumentStream("watch", a.watch))
	}
	if opts.KubeAPI != nil {
		// The Kubernetes API shares the JSON API's policies: Secrets, scopes, the stream
		// write timeout, ending streams on shutdown, and the HTTP metrics.
		opts.KubeAPI.ServeSecrets = opts.ServeSecrets
		opts.KubeAPI.Scope = scopeOf
		opts.KubeAPI.Streams = streams
		opts.KubeAPI.StreamWriteTimeout = opts.Limits.StreamWriteTimeout
		opts.KubeAPI.Register(mux, m.instrumentAny)
	}
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "NotFound", "no such endpoint: "+r.Method+" "+r.URL.Path+" (see docs/api.md)")
	})
	var routes http.Handler = mux
	if opts.Route != nil {
		routes = opts.Route(mux)
	}
	return &Server{Handler: guard(routes, opts.Authenticator, opts.Limits), endStreams: endStreams}
}

// ScopeOf returns the caller's scope for queries, nil for an unrestricted caller.
func ScopeOf(r *http.Request) aggregator.Scope { return scopeOf(r) }

type api struct {
	opts    Options
	ix      *aggregator.Index
	streams context.Context // ends when the server shuts down
}

func (a *api) clusters(w http.ResponseWriter, r *http.Request) {
	resp := struct {
		Clusters  []clusters.ClusterStatus `json:"clusters"`
		LoadError string                   `json:"loadError,omitempty"`
		Sharding  *sharding.Status         `json:"sharding,omitempty"`
	}{Clusters: []clusters.ClusterStatus{}}
	scope := scopeOf(r)
	for _, s := range a.opts.Fleet.Status() {
		if scope == nil || scope.SeesCluster(s.Name) {
			resp.Clusters = append(resp.Clusters, s)
		}
	}
	if err := a.opts.Fleet.LoadError(); err != nil {
		resp.LoadError = err.Error()
	}
	if a.opts.Sharding != nil {
		st := a.opts.Sharding.Status()
		for c := range st.Owners {
			if scope != nil && !scope.SeesCluster(c) {
				delete(st.Owners, c)
			}
		}
		resp.Sharding = &st
	}
	writeJSON(w, http.StatusOK, resp)
}

func (a *api) resources(w http.ResponseWriter, r *http.Request) {
	var out []aggregator.ResourceInfo
	for _, res := range a.ix.Resources() {
		if a.opts.ServeSecrets || !res.IsSecret() {
			out = append(out, res)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"resources": out})
}

// errSecretsOff refuses Secrets unless serveSecrets is on.
var errSecretsOff = errors.New("secrets are not served (set api.serveSecrets: true to serve them, always without values)")

// apiError is the body of every error response.
type apiError struct {
	Code    int    `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, code int, reason, msg string) {
	writeJSON(w, code, apiError{Code: code, Reason: reason, Message: msg})
}

// writeQueryError maps the aggregator's errors to status codes.
func writeQueryError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, aggregator.ErrUnknownResource), errors.Is(err, aggregator.ErrUnknownCluster), errors.Is(err, aggregator.ErrNotFound):
		writeError(w, http.StatusNotFound, "NotFound", err.Error())
	case errors.Is(err, errSecretsOff):
		writeError(w, http.StatusForbidden, "Forbidden", err.Error())
	case errors.As(err, new(badParam)):
		writeError(w, http.StatusBadRequest, "BadRequest", err.Error())
	case errors.Is(err, aggregator.ErrInvalidToken):
		writeError(w, http.StatusBadRequest, "BadRequest", err.Error())
	case errors.Is(err, aggregator.ErrExpired):
		writeError(w, http.StatusGone, "Expired", err.Error())
	default:
		writeError(w, http.StatusBadRequest, "BadRequest", err.Error())
	}
}

// writeJSON writes v indented: for small, human-read answers and errors.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeData writes v compact unless the request asks for ?pretty: re-indenting every
// object of a large list costs more than building it.
func writeData(w http.ResponseWriter, r *http.Request, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	if p := r.URL.Query().Get("pretty"); p != "" && p != "false" && p != "0" {
		enc.SetIndent("", "  ")
	}
	_ = enc.Encode(v)
}
