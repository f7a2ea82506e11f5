package workspaces

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	stops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_workspace_stops_total",
		Help: "Workspaces stopped or lost, by reason: idle, user or spot-loss.",
	}, []string{"reason"})
	starts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_workspace_starts_total",
		Help: "Workspace Pods berth created, by why: wake or recover.",
	}, []string{"trigger"})
	startFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_workspace_start_failures_total",
		Help: "Workspace starts refused by admission (a quota, a bad template), by why: wake or recover.",
	}, []string{"trigger"})
	startSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "berth_workspace_start_seconds",
		Help:    "Time from berth creating a workspace's Pod to seeing it Running.",
		Buckets: []float64{0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300},
	})
	keptBusy = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "berth_workspace_kept_busy_total",
		Help: "Times a workspace past its idle timeout was kept running for its CPU use.",
	})
	adoptions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "berth_workspace_adoptions_total",
		Help: "Labelled workspace Pods recorded as Workspaces.",
	})
)

func init() {
	metrics.Registry.MustRegister(stops, starts, startFailures, startSeconds, keptBusy, adoptions)
}
