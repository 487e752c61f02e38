package server

import (
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fleetcache/fleetcache/internal/request"
)

// httpMetrics instrument the API; a nil Registerer leaves handlers as they are.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	streams  prometheus.Gauge
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	if reg == nil {
		return nil
	}
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetcache_http_requests_total",
			Help: "HTTP requests answered (every route of both APIs, /metrics, /healthz and /readyz), by handler, method and status code; watch streams under <handler>-watch.",
		}, []string{"handler", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fleetcache_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request (watch streams excluded), by handler.",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
		}, []string{"handler", "method", "code"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleetcache_http_watch_streams",
			Help: "Watch streams currently open, of both APIs.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.streams)
	return m
}

// instrument counts a route's requests under name. A watch stream (request.IsWatch) is
// counted under name-watch (a route that serves only streams, under its own name) and
// in the open streams, not in the durations: a stream lasts as long as its client wants.
func (m *httpMetrics) instrument(name string, h http.HandlerFunc) http.Handler {
	if m == nil {
		return h
	}
	streamName := name + "-watch"
	if strings.HasSuffix(name, "watch") {
		streamName = name
	}
	// Present from the start, so dashboards and alerts find the series before traffic.
	m.requests.WithLabelValues(name, "get", "200")
	plain := promhttp.InstrumentHandlerDuration(m.duration.MustCurryWith(prometheus.Labels{"handler": name}),
		promhttp.InstrumentHandlerCounter(m.requests.MustCurryWith(prometheus.Labels{"handler": name}), h))
	stream := promhttp.InstrumentHandlerCounter(m.requests.MustCurryWith(prometheus.Labels{"handler": streamName}), h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if request.IsWatch(r) {
			m.streams.Inc()
			defer m.streams.Dec()
			stream.ServeHTTP(w, r)
			return
		}
		plain.ServeHTTP(w, r)
	})
}
