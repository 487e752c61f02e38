// Package server is fleetcache's HTTP front: the JSON API under /api/v1, /metrics,
// /healthz and /readyz, and the Kubernetes API (internal/kubeapi) mounted beside them, on
// one listener, behind one guard (authentication, in-flight and watch caps, request
// timeout) and one set of HTTP metrics. Both APIs read through internal/request's
// pipeline; this package parses /api/v1's URLs and encodes its answers. docs/api.md is its
// reference.
package server

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/kubeapi"
	"github.com/fleetcache/fleetcache/internal/request"
	"github.com/fleetcache/fleetcache/internal/sharding"
)

// Fleet is what the server needs of the clusters.
type Fleet interface {
	Status() []clusters.ClusterStatus
	Readiness() []clusters.Readiness
	Loaded() bool
	LoadError() error
}

// Options configure the handler. Zero values mean defaults (the read policies' are
// request.Options').
type Options struct {
	Fleet Fleet
	// Sharding, when set, adds the replica group's view to /api/v1/clusters.
	Sharding Sharding
	// Route, when set, wraps the API routes behind authentication (the sharding router,
	// which answers for clusters other replicas cache).
	Route    func(http.Handler) http.Handler
	Index    *aggregator.Index
	Gatherer prometheus.Gatherer
	Logger   *zap.Logger
	// DefaultLimit, MaxLimit and MaxResponseBytes: see request.Options.
	DefaultLimit     int
	MaxLimit         int
	MaxResponseBytes int
	// Ready is the /readyz policy.
	Ready ReadyPolicy
	// Registerer receives the HTTP request metrics. Nil: none.
	Registerer prometheus.Registerer
	// KubeAPI, when set, serves the Kubernetes read API under /clusters/ and /fleet/,
	// through the same request pipeline.
	KubeAPI *kubeapi.Handler
	// Authenticator, when set, is required for everything but /healthz and /readyz.
	Authenticator Authenticator
	Limits        Limits
	// ServeSecrets allows Secrets (always without values) to be served. Default: refused.
	ServeSecrets bool
}

// Sharding is what the server needs of a sharded replica's group (*sharding.Source).
type Sharding interface {
	Status() sharding.Status
	// All names every cluster of the fleet, cached here or by another replica, sorted.
	All() []string
}

var _ Sharding = (*sharding.Source)(nil)

// Server is the daemon's HTTP handler.
type Server struct {
	http.Handler
	pipeline *request.Pipeline
}

// EndStreams ends every open watch stream of both APIs cleanly (for graceful shutdown:
// http.Server's Shutdown waits for them otherwise) and makes new ones end at once.
func (s *Server) EndStreams() { s.pipeline.EndStreams() }

// New returns the daemon's HTTP handler.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	opts.Limits.setDefaults()
	p := request.New(opts.Index, request.Options{
		DefaultLimit: opts.DefaultLimit, MaxLimit: opts.MaxLimit, MaxResponseBytes: opts.MaxResponseBytes,
		StreamWriteTimeout: opts.Limits.StreamWriteTimeout, ServeSecrets: opts.ServeSecrets,
		ListSeats: opts.Limits.ListSeats, ListQueue: opts.Limits.ListQueue, ListQueueWait: opts.Limits.ListQueueWait,
	})
	a := &api{opts: opts, ix: opts.Index, p: p}
	m := newHTTPMetrics(opts.Registerer)
	mux := http.NewServeMux()
	// Every route is counted in the HTTP metrics, each under its own handler name.
	handle := func(pattern, name string, h http.HandlerFunc) { mux.Handle(pattern, m.instrument(name, h)) }
	handle("GET /healthz", "healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	handle("GET /readyz", "readyz", a.readyz)
	if opts.Gatherer != nil {
		mux.Handle("GET /metrics", m.instrument("metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}).ServeHTTP))
	}
	handle("GET /api/v1/clusters", "clusters", a.clusters)
	if a.ix != nil {
		handle("GET /api/v1/resources", "resources", a.resources)
		handle("GET /api/v1/objects", "objects", a.list)
		handle("GET /api/v1/objects/{cluster}/{resource}/{namespace}/{name}", "object", a.get)
		handle("GET /api/v1/count", "count", a.count)
		handle("GET /api/v1/watch", "watch", a.watch)
	}
	if opts.KubeAPI != nil {
		opts.KubeAPI.Pipeline = p
		opts.KubeAPI.Register(mux, m.instrument)
	}
	handle("/api/", "not-found", func(w http.ResponseWriter, r *http.Request) {
		request.WriteError(w, r, request.Failure(http.StatusNotFound, metav1.StatusReasonNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path+" (see docs/api.md)"))
	})
	var routes http.Handler = mux
	if opts.Route != nil {
		routes = opts.Route(mux)
	}
	return &Server{Handler: guard(routes, opts.Authenticator, opts.Limits, p), pipeline: p}
}

type api struct {
	opts Options
	ix   *aggregator.Index
	p    *request.Pipeline
}

func (a *api) clusters(w http.ResponseWriter, r *http.Request) {
	resp := struct {
		Clusters  []clusters.ClusterStatus `json:"clusters"`
		LoadError string                   `json:"loadError,omitempty"`
		Sharding  *sharding.Status         `json:"sharding,omitempty"`
	}{Clusters: []clusters.ClusterStatus{}}
	scope := request.Scope(r)
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
	// Compact unless ?pretty: at 1,000 clusters the answer holds 13,000 resource
	// statuses, and indenting them costs as much again as encoding them.
	writeData(w, r, resp)
}

func (a *api) resources(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"resources": a.p.Resources()})
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
	if q := r.URL.Query(); q.Has("pretty") && q.Get("pretty") != "false" && q.Get("pretty") != "0" {
		enc.SetIndent("", "  ")
	}
	_ = enc.Encode(v)
}
