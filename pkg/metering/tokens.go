package metering

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// vLLM's token counters, summed over their series (one per model).
const (
	PromptTokensMetric     = "vllm:prompt_tokens_total"
	GenerationTokensMetric = "vllm:generation_tokens_total"
)

// AnnotationMetricsPort names the port an inference Pod serves its
// Prometheus metrics on, at /metrics. Without it, the port of the first
// container that declares one is scraped, else vLLM's 8000.
const AnnotationMetricsPort = "berth.dev/metrics-port"

// TokenScraper reads the vLLM token counters of every running inference
// Pod once per Every, and turns them into tokens per interval for the
// meter's rows. A counter that goes down was reset (vLLM restarted): what
// it holds then is counted, never a negative amount. The counters at the
// last scrape of an interval are stored with its row, so that a restarted
// meter goes on from them and counts nothing twice.
//
// Scrapes run beside the meter's reconciles, a few at a time, each with a
// short timeout: a Pod that answers slowly, or not at all, delays no one
// else's metering. A scrape that fails counts nothing; its tokens are
// counted at the next scrape that succeeds.
type TokenScraper struct {
	Meter *Meter
	Every time.Duration
	// HTTP scrapes the Pods; its timeout bounds one scrape.
	HTTP *http.Client
	// Parallel scrapes at once; 0 means 8.
	Parallel int
}

// tokenState is what the meter knows of one Pod's counters.
type tokenState struct {
	// known is set once the counters' last values are known (from a
	// scrape, or from the database after a restart).
	known              bool
	prompt, generation float64
	// last is the interval of the last scrape.
	last time.Time
	// byStart holds the tokens counted per interval, for the intervals
	// not yet written for good.
	byStart map[time.Time]tokenCount
}

type tokenCount struct {
	prompt, generation int64
}

// NeedLeaderElection makes only the leader scrape, as only it meters.
func (s *TokenScraper) NeedLeaderElection() bool { return true }

// Start scrapes until ctx ends.
func (s *TokenScraper) Start(ctx context.Context) error {
	t := time.NewTicker(s.Every)
	defer t.Stop()
	for {
		s.scrapeAll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *TokenScraper) scrapeAll(ctx context.Context) {
	var pods corev1.PodList
	if err := s.Meter.Client.List(ctx, &pods, client.MatchingLabels{berthv1alpha1.LabelClass: string(berthv1alpha1.ClassInference)}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list inference Pods to scrape")
		return
	}
	parallel := s.Parallel
	if parallel <= 0 {
		parallel = 8
	}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := s.scrape(ctx, pod); err != nil {
				scrapeErrors.Inc()
				ctrl.LoggerFrom(ctx).V(1).Info("no token counters", "pod", client.ObjectKeyFromObject(pod), "error", err.Error())
			}
		})
	}
	wg.Wait()
}

// scrape reads one Pod's counters and counts what they grew by.
func (s *TokenScraper) scrape(ctx context.Context, pod *corev1.Pod) error {
	now := s.Meter.Clock.Now()
	prompt, generation, err := s.read(ctx, pod)
	if err != nil {
		return err
	}
	m := s.Meter
	m.mu.Lock()
	st := m.tokens[pod.UID]
	m.mu.Unlock()
	if st == nil {
		// After a restart, go on from the counters stored last.
		if st, err = m.storedTokens(ctx, string(pod.UID)); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur := m.tokens[pod.UID]; cur != nil {
		st = cur // another scrape came first
	}
	st.count(now.Truncate(m.Interval), prompt, generation)
	m.tokens[pod.UID] = st
	return nil
}

// count adds what the counters grew by since the last scrape to the
// interval holding this one. A counter below its last value was reset: all
// it holds is new. Before the first scrape, the counters started at 0 in
// this Pod.
func (st *tokenState) count(interval time.Time, prompt, generation float64) {
	grew := func(now, last float64) int64 {
		if now < last {
			return int64(now)
		}
		return int64(now) - int64(last)
	}
	c := st.byStart[interval]
	c.prompt += grew(prompt, st.prompt)
	c.generation += grew(generation, st.generation)
	st.byStart[interval] = c
	st.known, st.prompt, st.generation, st.last = true, prompt, generation, interval
}

// storedTokens reads where a Pod's counters stood at the last scrape any
// meter stored, with that interval's tokens.
func (m *Meter) storedTokens(ctx context.Context, uid string) (*tokenState, error) {
	st := &tokenState{byStart: map[time.Time]tokenCount{}}
	var start time.Time
	var c tokenCount
	err := m.DB.QueryRow(ctx, `SELECT interval_start, prompt_tokens, generation_tokens, prompt_tokens_counter, generation_tokens_counter
		FROM usage_intervals WHERE uid = $1 AND prompt_tokens_counter IS NOT NULL ORDER BY interval_start DESC LIMIT 1`, uid).
		Scan(&start, &c.prompt, &c.generation, &st.prompt, &st.generation)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read where the token counters of Pod %s stood: %w", uid, err)
	}
	st.known, st.last = true, start
	st.byStart[start] = c
	return st, nil
}

// read scrapes the Pod's /metrics and sums vLLM's two counters.
func (s *TokenScraper) read(ctx context.Context, pod *corev1.Pod) (prompt, generation float64, err error) {
	url := fmt.Sprintf("http://%s/metrics", net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(metricsPort(pod))))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, 0, fmt.Errorf("GET %s: not Prometheus text: %w", url, err)
	}
	sum := func(name string) (float64, bool) {
		f, ok := families[name]
		if !ok {
			return 0, false
		}
		total := 0.0
		for _, m := range f.GetMetric() {
			total += m.GetCounter().GetValue()
		}
		return total, true
	}
	prompt, okP := sum(PromptTokensMetric)
	generation, okG := sum(GenerationTokensMetric)
	if !okP && !okG {
		return 0, 0, fmt.Errorf("GET %s: no %s or %s", url, PromptTokensMetric, GenerationTokensMetric)
	}
	return prompt, generation, nil
}

// metricsPort is the port an inference Pod's metrics are scraped on.
func metricsPort(pod *corev1.Pod) int {
	if p, err := strconv.Atoi(pod.Annotations[AnnotationMetricsPort]); err == nil && p > 0 && p < 65536 {
		return p
	}
	for _, c := range pod.Spec.Containers {
		if len(c.Ports) > 0 {
			return int(c.Ports[0].ContainerPort)
		}
	}
	return 8000
}

// tokensOf returns a Pod's tokens per interval, and the counters for the
// interval of its last scrape, for Intervals.
func (m *Meter) tokensOf(uid types.UID) func(time.Time) (tokenCount, *[2]float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.tokens[uid]
	if st == nil {
		return func(time.Time) (tokenCount, *[2]float64) { return tokenCount{}, nil }
	}
	byStart := make(map[time.Time]tokenCount, len(st.byStart))
	for k, v := range st.byStart {
		byStart[k] = v
	}
	last, counters := st.last, [2]float64{st.prompt, st.generation}
	return func(start time.Time) (tokenCount, *[2]float64) {
		if start.Equal(last) {
			return byStart[start], &counters
		}
		return byStart[start], nil
	}
}
