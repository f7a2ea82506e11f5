package quota

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/quota"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

const (
	replicas = 3
	creates  = 50
)

// TestQuotaHoldsUnderConcurrentCreatesOnThreeReplicas starts three
// berth-manager processes behind a round-robin TCP balancer (the part a
// Service plays in a cluster) and sends 50 concurrent creates per quota.
func TestQuotaHoldsUnderConcurrentCreatesOnThreeReplicas(t *testing.T) {
	env := framework.Cluster(t)
	lb := newBalancer(t)
	var managers []*framework.Process
	for i := range replicas {
		args := []string{"--scheduler-name=", "--leader-elect"}
		managers = append(managers, framework.StartManager(t, env, framework.ManagerOptions{
			Args: args, WebhookURL: fmt.Sprintf("https://localhost:%d", lb.port),
		}))
		lb.add(managers[i].Webhook)
	}

	t.Run("maxWorkspaces", func(t *testing.T) {
		const limit = 17
		org := testutil.Org("burst-ws").MaxWorkspaces(limit).Obj()
		env.Create(t, org)
		ns := env.Namespace(t, org.Name)
		admitted := burst(t, func(i int) error {
			return env.Client.Create(t.Context(), testutil.Pod(fmt.Sprintf("ws-%02d", i)).Namespace(ns).
				Class(berthv1alpha1.ClassWorkspace).Obj())
		})
		assert.Equal(t, limit, admitted, "admitted workspaces")
		var pods corev1.PodList
		require.NoError(t, env.Client.List(t.Context(), &pods))
		assert.Equal(t, limit, countIn(pods.Items, ns), "workspace Pods stored")
	})

	// Far from its limit an org's workspaces are admitted under each
	// replica's hold, without a ledger write each; near it the holds are
	// returned and every admission writes again. Neither admits one too many.
	t.Run("maxWorkspaces under holds", func(t *testing.T) {
		const limit = 120
		org := testutil.Org("burst-held").MaxWorkspaces(limit).Obj()
		env.Create(t, org)
		ns := env.Namespace(t, org.Name)
		create := func(i int) error {
			return env.Client.Create(t.Context(), testutil.Pod(fmt.Sprintf("ws-%03d", i)).Namespace(ns).
				Class(berthv1alpha1.ClassWorkspace).Obj())
		}
		writes := func() float64 {
			var n float64
			for _, m := range managers {
				v, err := m.MetricValue("berth_webhook_quota_write_seconds_count")
				require.NoError(t, err)
				n += v
			}
			return n
		}
		before := writes()
		assert.Equal(t, 60, burstN(t, 60, create), "admitted far from the limit")
		far := writes() - before
		t.Logf("ledger writes for 60 admissions far from the limit: %.0f", far)
		assert.Less(t, far, 30.0, "ledger writes for 60 admissions under holds")
		assert.Equal(t, 60, burstN(t, 100, func(i int) error { return create(60 + i) }), "admitted up to the limit")
		var pods corev1.PodList
		require.NoError(t, env.Client.List(t.Context(), &pods))
		assert.Equal(t, limit, countIn(pods.Items, ns), "workspace Pods stored")

		// Within a few ticks every admitted Pod is a ledger entry and no
		// replica holds slots any more.
		require.Eventually(t, func() bool {
			cm := &corev1.ConfigMap{}
			require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Namespace: "berth-system", Name: quota.Name(org.Name)}, cm))
			return strings.Count(cm.Data[quota.DataKey], "\n") == limit && cm.Data[quota.HoldsKey] == ""
		}, 30*time.Second, 200*time.Millisecond, "ledger holds %d entries and no holds", limit)
	})

	t.Run("maxGPUs", func(t *testing.T) {
		const limit = 8
		org := testutil.Org("burst-gpu").MaxGPUs(limit).Obj()
		env.Create(t, org)
		ns := env.Namespace(t, org.Name)
		admitted := burst(t, func(i int) error {
			return env.Client.Create(t.Context(), testutil.Pod(fmt.Sprintf("vllm-%02d", i)).Namespace(ns).
				Class(berthv1alpha1.ClassInference).Resource("nvidia.com/gpu", "1").Obj())
		})
		assert.Equal(t, limit, admitted, "admitted 1-GPU inference Pods")
	})

	for i, m := range managers {
		n, err := m.MetricValue("berth_webhook_admissions_total", `kind="Pod"`, `operation="CREATE"`)
		require.NoError(t, err)
		assert.Positive(t, n, "replica %d decided some of the creates", i)
		t.Logf("replica %d: %v Pod admission decisions", i, n)
	}
}

// burst runs create for 0..creates-1 at once and counts successes; every
// failure must be a quota denial.
func burst(t *testing.T, create func(int) error) int { return burstN(t, creates, create) }

// burstN is burst with n creates.
func burstN(t *testing.T, n int, create func(int) error) int {
	var ok atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			err := create(i)
			switch {
			case err == nil:
				ok.Add(1)
			case apierrors.IsForbidden(err):
			default:
				t.Errorf("create %d: %v", i, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	return int(ok.Load())
}

func countIn(pods []corev1.Pod, ns string) int {
	n := 0
	for _, p := range pods {
		if p.Namespace == ns {
			n++
		}
	}
	return n
}

// balancer spreads TCP connections over backends, round robin.
type balancer struct {
	port     int
	mu       sync.Mutex
	backends []string
	next     int
}

func newBalancer(t *testing.T) *balancer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	b := &balancer{port: l.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go b.serve(c)
		}
	}()
	return b
}

func (b *balancer) add(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends = append(b.backends, addr)
}

func (b *balancer) serve(c net.Conn) {
	defer c.Close()
	b.mu.Lock()
	if len(b.backends) == 0 {
		b.mu.Unlock()
		return
	}
	addr := b.backends[b.next%len(b.backends)]
	b.next++
	b.mu.Unlock()
	up, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}
