package extender

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// placement is where one run put the Pods, in terms that do not depend on
// how ties between identical empty nodes were broken: per pool, the number
// of Pods on each node in the order the nodes were first used; for each Pod
// in turn, the first-use index of its node; and why the plain Pod was
// refused.
type placement struct {
	perPool  map[string][]int
	sequence []int
	refusal  string
}

func TestExtenderPlacesLikeThePlugin(t *testing.T) {
	env, ext, extURL := setup(t)

	org := testutil.Org("extender-parity").ClassDefault(berthv1alpha1.ClassWorkspace, "2", "4Gi").Obj()
	env.Create(t, org)

	waitEmpty(t, env, extURL)
	plugin := place(t, env, org.Name, "berth-scheduler")
	waitEmpty(t, env, extURL)
	extender := place(t, env, org.Name, extenderSchedulerName)

	// Spot nodes have 16 CPU: eight 2-CPU workspaces fill the first before
	// the second is used; the GPU nodes have 4 GPUs: three vLLM Pods share one.
	want := map[string][]int{"spot-ssd": {8, 2}, "gpu": {3}}
	wantSequence := []int{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2}
	assert.Equal(t, want, plugin.perPool, "berth-scheduler")
	assert.Equal(t, wantSequence, plugin.sequence, "berth-scheduler")
	assert.Equal(t, want, extender.perPool, "stock kube-scheduler with berth-extender")
	assert.Equal(t, wantSequence, extender.sequence, "stock kube-scheduler with berth-extender")
	assert.Equal(t, plugin.sequence, extender.sequence, "the extender places like the plugin")
	for _, r := range []string{plugin.refusal, extender.refusal} {
		assert.Contains(t, r, "kept for inference")
	}

	for _, verb := range []string{"filter", "prioritize"} {
		n, err := ext.MetricValue("berth_extender_requests_total", `verb="`+verb+`"`, `code="200"`)
		require.NoError(t, err)
		assert.GreaterOrEqual(t, n, 13.0, "%s calls answered", verb)
	}
}

// place creates, in a namespace of its own, ten workspaces, three one-GPU
// vLLM Pods and a plain Pod asking for the GPU pool, one after the other,
// each with the given schedulerName, records where they land and deletes
// them.
func place(t *testing.T, env *framework.ClusterEnv, org, scheduler string) placement {
	t.Helper()
	ns := env.Namespace(t, org)
	perNode, index := map[string]int{}, map[string]int{}
	var order []*corev1.Node
	var sequence []int
	bind := func(pod *corev1.Pod) {
		env.Create(t, pod)
		node := bound(t, env, pod)
		if perNode[node.Name] == 0 {
			index[node.Name] = len(order)
			order = append(order, node)
		}
		perNode[node.Name]++
		sequence = append(sequence, index[node.Name])
	}
	for i := range 10 {
		bind(testutil.Pod(fmt.Sprintf("ws-%02d", i)).Namespace(ns).Class(berthv1alpha1.ClassWorkspace).
			User("ana").SchedulerName(scheduler).Obj())
	}
	for i := range 3 {
		bind(testutil.Pod(fmt.Sprintf("vllm-%d", i)).Namespace(ns).Class(berthv1alpha1.ClassInference).
			Resource("nvidia.com/gpu", "1").SchedulerName(scheduler).Obj())
	}
	plain := testutil.Pod("plain").Namespace(ns).SchedulerName(scheduler).Obj()
	plain.Spec.NodeSelector = map[string]string{localcluster.LabelPool: "gpu"}
	plain.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	env.Create(t, plain)

	p := placement{perPool: map[string][]int{}, sequence: sequence, refusal: refusal(t, env, plain)}
	for _, n := range order {
		pool := n.Labels[localcluster.LabelPool]
		p.perPool[pool] = append(p.perPool[pool], perNode[n.Name])
	}
	t.Logf("%s: %v; plain Pod refused: %s", scheduler, p.perPool, p.refusal)

	require.NoError(t, env.Client.DeleteAllOf(t.Context(), &corev1.Pod{}, client.InNamespace(ns), client.GracePeriodSeconds(0)))
	framework.Eventually(t, 60*time.Second, "the Pods of "+ns+" to be gone", func(ctx context.Context) (bool, error) {
		var pods corev1.PodList
		err := env.Client.List(ctx, &pods, client.InNamespace(ns))
		return len(pods.Items) == 0, err
	})
	return p
}

// bound waits until the Pod is bound and returns its node.
func bound(t *testing.T, env *framework.ClusterEnv, pod *corev1.Pod) *corev1.Node {
	t.Helper()
	framework.Eventually(t, 30*time.Second, "pod "+pod.Name+" to be bound by "+pod.Spec.SchedulerName, func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return pod.Spec.NodeName != "", err
	})
	node := &corev1.Node{}
	if err := env.Client.Get(t.Context(), client.ObjectKey{Name: pod.Spec.NodeName}, node); err != nil {
		t.Fatal(err)
	}
	return node
}

// refusal waits until the scheduler reports the Pod unschedulable and
// returns why; the Pod must not be bound.
func refusal(t *testing.T, env *framework.ClusterEnv, pod *corev1.Pod) string {
	t.Helper()
	var msg string
	framework.Eventually(t, 30*time.Second, "pod "+pod.Name+" to be refused by "+pod.Spec.SchedulerName, func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				msg = c.Message
				return true, err
			}
		}
		return false, err
	})
	assert.Empty(t, pod.Spec.NodeName, "pod %s must stay pending", pod.Name)
	return msg
}

// waitEmpty waits until berth-extender's cache no longer holds the Pods of
// the last run: every spot node then scores the same for a workspace.
func waitEmpty(t *testing.T, env *framework.ClusterEnv, extURL string) {
	t.Helper()
	pools, err := env.NodesByPool(t.Context())
	require.NoError(t, err)
	var names []string
	for _, n := range pools["spot-ssd"] {
		names = append(names, n.Name)
	}
	for _, n := range pools["gpu"] {
		names = append(names, n.Name)
	}
	pod := testutil.Pod("probe").Class(berthv1alpha1.ClassWorkspace).
		Resource(corev1.ResourceCPU, "2").Resource(corev1.ResourceMemory, "4Gi").Obj()
	body, err := json.Marshal(extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names})
	require.NoError(t, err)
	gpuPod := testutil.Pod("probe").Class(berthv1alpha1.ClassInference).Resource("nvidia.com/gpu", "1").Obj()
	gpuBody, err := json.Marshal(extenderv1.ExtenderArgs{Pod: gpuPod, NodeNames: &names})
	require.NoError(t, err)
	framework.Eventually(t, 30*time.Second, "berth-extender's cache to see no Pods", func(ctx context.Context) (bool, error) {
		a, err := prioritize(ctx, extURL, body)
		if err != nil {
			return false, err
		}
		b, err := prioritize(ctx, extURL, gpuBody)
		if err != nil {
			return false, err
		}
		return same(a[:len(pools["spot-ssd"])]) && same(b[len(pools["spot-ssd"]):]), nil
	})
}

func prioritize(ctx context.Context, url string, body []byte) (extenderv1.HostPriorityList, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/prioritize", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("prioritize: %s", resp.Status)
	}
	var out extenderv1.HostPriorityList
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

func same(l extenderv1.HostPriorityList) bool {
	for _, h := range l {
		if h.Score != l[0].Score {
			return false
		}
	}
	return true
}
