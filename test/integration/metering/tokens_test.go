package metering

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/metering"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// An inference Pod's vLLM token counters are scraped and charged to its
// org: growth is counted, a reset (vLLM restarted) never counts negative,
// and a meter killed and restarted goes on from the stored counters,
// counting nothing twice.
func TestMeterCountsVLLMTokens(t *testing.T) {
	env := framework.Cluster(t)
	pool, dsn := migrated(t)
	meter := startMeter(t, env, dsn)
	ns := env.Namespace(t, "acme")

	// A stand-in for vLLM's /metrics, on 127.0.0.1: the Pod's IP is
	// pointed at it.
	var prompt, generation atomic.Int64
	vllm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{model_name=\"qwen\"} %d\n", prompt.Load())
		fmt.Fprintf(w, "# TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total{model_name=\"qwen\"} %d\n", generation.Load())
	}))
	defer vllm.Close()
	_, port, err := net.SplitHostPort(vllm.Listener.Addr().String())
	require.NoError(t, err)

	nodes, err := env.NodesByPool(t.Context())
	require.NoError(t, err)
	pod := testutil.Pod("vllm-0").Namespace(ns).Class(berthv1alpha1.ClassInference).Project("chat").
		Annotation(metering.AnnotationMetricsPort, port).NodeName(nodes["gpu"][0].Name).Obj()
	pod.Finalizers = []string{hold}
	require.NoError(t, env.Client.Create(t.Context(), pod))
	framework.Eventually(t, time.Minute, "the Pod runs", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return pod.Status.Phase == corev1.PodRunning, err
	})
	patch := client.MergeFrom(pod.DeepCopy())
	pod.Status.PodIP, pod.Status.PodIPs = "127.0.0.1", []corev1.PodIP{{IP: "127.0.0.1"}}
	require.NoError(t, env.Client.Status().Patch(t.Context(), pod, patch))

	counted := func(ctx context.Context) (p, g int64, cp *float64, err error) {
		err = pool.QueryRow(ctx, `SELECT coalesce(sum(prompt_tokens), 0), coalesce(sum(generation_tokens), 0),
			(SELECT prompt_tokens_counter FROM usage_intervals WHERE uid = $1 AND prompt_tokens_counter IS NOT NULL ORDER BY interval_start DESC LIMIT 1)
			FROM usage_intervals WHERE uid = $1`, pod.UID).Scan(&p, &g, &cp)
		return
	}
	expect := func(what string, wantP, wantG int64, counter float64) {
		t.Helper()
		framework.Eventually(t, time.Minute, what, func(ctx context.Context) (bool, error) {
			_, _, cp, err := counted(ctx)
			return cp != nil && *cp == counter, err
		})
		p, g, _, err := counted(t.Context())
		require.NoError(t, err)
		assert.Equal(t, wantP, p, "%s: prompt tokens", what)
		assert.Equal(t, wantG, g, "%s: generation tokens", what)
	}
	prompt.Store(100)
	generation.Store(40)
	expect("the first counters, all of them", 100, 40, 100)
	prompt.Store(300)
	generation.Store(120)
	expect("the growth", 300, 120, 300)
	prompt.Store(20)
	generation.Store(10)
	expect("a reset counts what the new counters hold", 320, 130, 20)

	require.NoError(t, syscall.Kill(meter.PID(), syscall.SIGKILL))
	meter.Stop()
	// Past the 2 s interval of the last scrape, so that the next one
	// cannot merge into that interval's row.
	time.Sleep(3 * time.Second)
	prompt.Store(70)
	generation.Store(30)
	startMeter(t, env, dsn)
	expect("a restarted meter goes on from the stored counters", 370, 150, 70)

	// Deleted in the interval of the last scrape, maybe in the second its
	// delete time is truncated from: those tokens stay.
	require.NoError(t, env.Client.Delete(t.Context(), pod))
	settle(t, env, []*corev1.Pod{pod})
	p, g, _, err := counted(t.Context())
	require.NoError(t, err)
	assert.Equal(t, int64(370), p)
	assert.Equal(t, int64(150), g)
	var hourlyP int64
	var org, project string
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT sum(prompt_tokens)::bigint, max(org), max(project) FROM usage_hourly WHERE uid = $1", pod.UID).Scan(&hourlyP, &org, &project))
	assert.Equal(t, int64(370), hourlyP, "the hourly sums agree")
	assert.Equal(t, "acme", org, "the namespace's org")
	assert.Equal(t, "chat", project)
}
