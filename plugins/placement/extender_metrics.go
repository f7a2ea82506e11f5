package placement

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ExtenderMetrics count and time the extender's requests. Labels are the
// verb and the HTTP code only.
type ExtenderMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewExtenderMetrics registers the extender's metrics with reg.
func NewExtenderMetrics(reg prometheus.Registerer) *ExtenderMetrics {
	m := &ExtenderMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_extender_requests_total",
			Help: "Requests to berth-extender by verb (filter, prioritize) and HTTP code.",
		}, []string{"verb", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "berth_extender_duration_seconds",
			Help:    "Time berth-extender took to answer a request, by verb.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"verb"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// instrument counts and times h's requests as verb; with nil metrics it is h.
func (m *ExtenderMetrics) instrument(verb string, h http.Handler) http.Handler {
	if m == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &codeRecorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		m.requests.WithLabelValues(verb, strconv.Itoa(rec.code)).Inc()
		m.duration.WithLabelValues(verb).Observe(time.Since(start).Seconds())
	})
}

type codeRecorder struct {
	http.ResponseWriter
	code int
}

func (c *codeRecorder) WriteHeader(code int) {
	c.code = code
	c.ResponseWriter.WriteHeader(code)
}

// MetricsHandler serves the metrics of g (the extender's own registry) on
// /metrics.
func MetricsHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return mux
}
