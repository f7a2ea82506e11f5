package webhooks

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	admissions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_webhook_admissions_total",
		Help: "Admission decisions on labelled Pods and Jobs, by kind, operation, org and result (allowed, denied, error).",
	}, []string{"kind", "operation", "org", "result"})
	denials = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_webhook_denials_total",
		Help: "Denials by kind and reason (class, org, labels, resources, security, placement, blob, quota, queue).",
	}, []string{"kind", "reason"})
	latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "berth_webhook_duration_seconds",
		Help:    "Time to decide one admission, by kind and phase (mutate, validate).",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
	}, []string{"kind", "phase"})
	mutations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_webhook_mutations_total",
		Help: "Objects the mutating webhooks allowed, by kind and result (patched, or unchanged when berth found nothing to do).",
	}, []string{"kind", "result"})
	ledgerWrites = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "berth_webhook_quota_write_seconds",
		Help:    "Time of one quota ledger write on the API server; one write commits a batch of reservations.",
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
	})
	ledgerBatch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "berth_webhook_quota_batch_size",
		Help:    "Reservations decided together and committed in one ledger write.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
	})
	quotaConflicts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "berth_webhook_quota_retries_total",
		Help: "Quota ledger writes lost to another replica and decided again.",
	})
)

func init() {
	metrics.Registry.MustRegister(admissions, denials, latency, mutations, ledgerWrites, ledgerBatch, quotaConflicts)
}
