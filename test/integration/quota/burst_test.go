package quota

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/quota"
	"berth.dev/berth/pkg/requests"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

const (
	replicas = 3
	creates  = 50
)

// TestQuotaIsExactUnderConcurrentCreatesOnThreeReplicas starts three
// berth-manager processes behind a round-robin TCP balancer (the part a
// Service plays in a cluster) and sends 50 concurrent creates per quota.
func TestQuotaIsExactUnderConcurrentCreatesOnThreeReplicas(t *testing.T) {
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

	// A sidecar's GPU counts beside the main container's.
	t.Run("maxGPUs counts sidecars", func(t *testing.T) {
		const limit = 6
		org := testutil.Org("burst-gpu-build").MaxGPUs(limit).Obj()
		env.Create(t, org)
		ns := env.Namespace(t, org.Name)
		admitted := burst(t, func(i int) error {
			pod := testutil.Pod(fmt.Sprintf("vllm-%02d", i)).Namespace(ns).Class(berthv1alpha1.ClassInference).Resource("nvidia.com/gpu", "1")
			if i%2 == 1 {
				// A sidecar's GPU adds to the main container's.
				pod = pod.InitContainer(corev1.Container{Name: "side", Image: testutil.DefaultImage, RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
					Resources: corev1.ResourceRequirements{
						Requests: corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")},
						Limits:   corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")},
					}})
			}
			return env.Client.Create(t.Context(), pod.Obj())
		})
		var pods corev1.PodList
		require.NoError(t, env.Client.List(t.Context(), &pods, client.InNamespace(ns)))
		var held int64
		for _, p := range pods.Items {
			held += requests.GPUs(&p.Spec)
		}
		assert.LessOrEqual(t, held, int64(limit), "GPUs held by the %d admitted Pods", admitted)
		assert.GreaterOrEqual(t, held, int64(limit-1), "the limit is used up to the last GPU that fits")
		cm := &corev1.ConfigMap{}
		require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Namespace: "berth-system", Name: quota.Name(org.Name)}, cm))
		assert.Equal(t, admitted, strings.Count(cm.Data[quota.DataKey], "\n"), "one ledger entry per admitted Pod, by UID")
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
