// Package server is fleetcache's HTTP front: the JSON API under /api/v1, /metrics,
// /healthz and /readyz, on one listener.
package server

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fleetcache/fleetcache/clusters"
)

// Fleet is what the server reads.
type Fleet interface {
	Status() []clusters.ClusterStatus
	Ready() bool
	LoadError() error
}

// Handler returns the daemon's HTTP handler.
func Handler(fleet Fleet, gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !fleet.Ready() {
			http.Error(w, "initial sync in progress\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /api/v1/clusters", func(w http.ResponseWriter, r *http.Request) {
		resp := struct {
			Clusters  []clusters.ClusterStatus `json:"clusters"`
			LoadError string                   `json:"loadError,omitempty"`
		}{Clusters: fleet.Status()}
		if err := fleet.LoadError(); err != nil {
			resp.LoadError = err.Error()
		}
		writeJSON(w, http.StatusOK, resp)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
