package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
			Help: "API requests answered, by handler, method and status code.",
		}, []string{"handler", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fleetcache_http_request_duration_seconds",
			Help:    "Time to answer an API request (watch streams excluded), by handler.",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
		}, []string{"handler", "method", "code"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleetcache_http_watch_streams",
			Help: "API watch streams currently open.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.streams)
	return m
}

func (m *httpMetrics) instrument(name string, h http.HandlerFunc) http.Handler {
	if m == nil {
		return h
	}
	l := prometheus.Labels{"handler": name}
	// Present from the start, so dashboards and alerts find the series before traffic.
	m.requests.WithLabelValues(name, "get", "200")
	return promhttp.InstrumentHandlerDuration(m.duration.MustCurryWith(l), promhttp.InstrumentHandlerCounter(m.requests.MustCurryWith(l), h))
}

// instrumentAny instruments a handler that serves both requests and watch streams (the
// Kubernetes API): each request is counted as what it is.
func (m *httpMetrics) instrumentAny(name string, h http.HandlerFunc) http.Handler {
	if m == nil {
		return h
	}
	plain, stream := m.instrument(name, h), m.instrumentStream(name+"-watch", h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isWatch(r) {
			stream.ServeHTTP(w, r)
			return
		}
		plain.ServeHTTP(w, r)
	})
}

func (m *httpMetrics) instrumentStream(name string, h http.HandlerFunc) http.Handler {
	if m == nil {
		return h
	}
	counted := promhttp.InstrumentHandlerCounter(m.requests.MustCurryWith(prometheus.Labels{"handler": name}), h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.streams.Inc()
		defer m.streams.Dec()
		counted.ServeHTTP(w, r)
	})
}
