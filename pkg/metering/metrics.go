package metering

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The usage counters carry org and class only, never a user or a Pod, so
// their series stay few. The org is the namespace's, which only the
// platform team sets.
var (
	cpuSeconds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_usage_cpu_core_seconds_total",
		Help: "CPU charged, max(request, use), in core-seconds, by org and class.",
	}, []string{"org", "class"})
	memorySeconds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_usage_memory_gib_seconds_total",
		Help: "Memory charged, max(request, use), in GiB-seconds, by org and class.",
	}, []string{"org", "class"})
	gpuSeconds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_usage_gpu_seconds_total",
		Help: "GPUs requested, in GPU-seconds, by org and class.",
	}, []string{"org", "class"})
	costDollars = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_cost_dollars_total",
		Help: "Node cost charged, in US dollars, by org, class and whether the node is spot.",
	}, []string{"org", "class", "spot"})
	rowsWritten = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "berth_meter_rows_written_total",
		Help: "Usage interval rows written to PostgreSQL (a rewritten open interval counts each time).",
	})
	writeErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "berth_meter_write_errors_total",
		Help: "Usage writes that failed; the Pod is metered again with backoff, from the last interval written.",
	})
	tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_usage_tokens_total",
		Help: "Tokens inference Pods' vLLM counted, by org, class and kind (prompt or generation).",
	}, []string{"org", "class", "kind"})
	scrapeErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "berth_meter_scrape_errors_total",
		Help: "Scrapes of inference Pods' token counters that failed; their tokens are counted at the next scrape that succeeds.",
	})
	measureErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "berth_meter_measure_errors_total",
		Help: "Lists of PodMetrics from metrics.k8s.io that failed; requests alone are charged for that interval.",
	})
)

func init() {
	metrics.Registry.MustRegister(cpuSeconds, memorySeconds, gpuSeconds, costDollars, tokens, rowsWritten, writeErrors, scrapeErrors, measureErrors)
}

// count adds to the usage counters what r adds to prev, the same interval
// as written before by this process (a zero Row when it was not).
func count(r, prev Row) {
	cpuSeconds.WithLabelValues(r.Org, r.Class).Add(max(0, r.CPUCoreSeconds-prev.CPUCoreSeconds))
	memorySeconds.WithLabelValues(r.Org, r.Class).Add(max(0, r.MemoryGiBSeconds-prev.MemoryGiBSeconds))
	gpuSeconds.WithLabelValues(r.Org, r.Class).Add(max(0, r.GPUSeconds-prev.GPUSeconds))
	costDollars.WithLabelValues(r.Org, r.Class, strconv.FormatBool(r.Spot)).Add(max(0, r.CostDollars-prev.CostDollars))
	if r.PromptTokens > prev.PromptTokens || r.GenerationTokens > prev.GenerationTokens {
		tokens.WithLabelValues(r.Org, r.Class, "prompt").Add(float64(max(0, r.PromptTokens-prev.PromptTokens)))
		tokens.WithLabelValues(r.Org, r.Class, "generation").Add(float64(max(0, r.GenerationTokens-prev.GenerationTokens)))
	}
}
