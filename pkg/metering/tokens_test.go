package metering

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Counters that grow are counted by what they grew; a counter that goes
// down was reset and all it holds is new; never a negative amount.
func TestTokenCountersAndResets(t *testing.T) {
	st := &tokenState{byStart: map[time.Time]tokenCount{}}
	i0, i1 := t0, t0.Add(time.Minute)
	st.count(i0, 100, 40) // vLLM started in this Pod: all of it
	st.count(i0, 150, 60)
	st.count(i1, 20, 5) // restarted
	st.count(i1, 70, 25)
	assert.Equal(t, tokenCount{prompt: 150, generation: 60}, st.byStart[i0])
	assert.Equal(t, tokenCount{prompt: 70, generation: 25}, st.byStart[i1])
	assert.Equal(t, i1, st.last)
	assert.InDelta(t, 70, st.prompt, 0)
}

func TestTokensAreReadFromVLLMsMetrics(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model_name="a"} 1200
vllm:prompt_tokens_total{model_name="b"} 34
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{model_name="a"} 560
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running 2
`)
	}))
	defer srv.Close()
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	host, port, err := net.SplitHostPort(u.Host)
	require.NoError(t, err)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationMetricsPort: port}},
		Status: corev1.PodStatus{PodIP: host}}
	s := &TokenScraper{HTTP: srv.Client()}
	p, g, err := s.read(t.Context(), pod)
	require.NoError(t, err)
	assert.InDelta(t, 1234, p, 0, "summed over models")
	assert.InDelta(t, 560, g, 0)

	pod.Annotations[AnnotationMetricsPort] = strconv.Itoa(1) // nothing listens
	_, _, err = s.read(t.Context(), pod)
	assert.Error(t, err)
}

func TestTheMetricsPort(t *testing.T) {
	pod := &corev1.Pod{}
	assert.Equal(t, 8000, metricsPort(pod), "vLLM's default")
	pod.Spec.Containers = []corev1.Container{{Name: "vllm", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}
	assert.Equal(t, 8080, metricsPort(pod))
	pod.Annotations = map[string]string{AnnotationMetricsPort: "9090"}
	assert.Equal(t, 9090, metricsPort(pod))
	pod.Annotations[AnnotationMetricsPort] = "http"
	assert.Equal(t, 8080, metricsPort(pod), "a port that is not a number is ignored")
}

// Tokens scraped in the second an ended Pod's end was truncated from stay,
// in a final row that charges nothing else.
func TestTokensPastTheEndStay(t *testing.T) {
	end := t0.Add(42 * time.Second)
	p := Pod{UID: "u", CPU: 1, Start: t0, End: end, NodePrice: 1, NodeShare: 0.5}
	use := func(start time.Time) Usage {
		if start.Equal(end) {
			return Usage{PromptTokens: 50, GenerationTokens: 20}
		}
		return Usage{}
	}
	step := 2 * time.Second
	rows := Intervals(p, t0.Add(42*time.Second), end, step, use)
	require.Len(t, rows, 1, "no time run from the end on, only the tokens")
	assert.Equal(t, end, rows[0].IntervalStart)
	assert.True(t, rows[0].Final)
	assert.Zero(t, rows[0].RunningSeconds)
	assert.Zero(t, rows[0].CPUCoreSeconds)
	assert.Zero(t, rows[0].CostDollars)
	assert.EqualValues(t, 50, rows[0].PromptTokens)

	rows = Intervals(p, t0.Add(40*time.Second), end, step, use)
	require.Len(t, rows, 2)
	assert.InDelta(t, 2, rows[0].RunningSeconds, 1e-9)
	assert.EqualValues(t, 20, rows[1].GenerationTokens)
	assert.Empty(t, Intervals(Pod{UID: "u", CPU: 1, Start: t0, End: end}, end, end, step, nil))
}
