package placement

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

func TestWorkspacesFillOneSpotNodeBeforeTheNext(t *testing.T) {
	env := setup(t)
	org := testutil.Org("ws-packing").ClassDefault(berthv1alpha1.ClassWorkspace, "2", "4Gi").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)

	// Spot nodes have 16 CPU: eight 2-CPU workspaces fill one.
	perNode := map[string]int{}
	var order []string
	for i := range 10 {
		pod := testutil.Pod(fmt.Sprintf("ws-%02d", i)).Namespace(ns).Class(berthv1alpha1.ClassWorkspace).User("ana").Obj()
		env.Create(t, pod)
		assert.Equal(t, "berth-scheduler", pod.Spec.SchedulerName)
		node := bound(t, env, pod)
		assert.Equal(t, "spot-ssd", node.Labels[localcluster.LabelPool], "workspace %d on %s", i, node.Name)
		if perNode[node.Name] == 0 {
			order = append(order, node.Name)
		}
		perNode[node.Name]++
	}
	require.Len(t, order, 2, "ten workspaces need two nodes: %v", perNode)
	assert.Equal(t, 8, perNode[order[0]], "the first node is filled before the second is used: %v", perNode)
	assert.Equal(t, 2, perNode[order[1]])
}

func TestInferencePacksGPUs(t *testing.T) {
	env := setup(t)
	org := testutil.Org("vllm").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)
	perNode := map[string]int{}
	for i := range 6 {
		pod := testutil.Pod(fmt.Sprintf("vllm-%d", i)).Namespace(ns).Class(berthv1alpha1.ClassInference).
			Resource("nvidia.com/gpu", "1").Obj()
		env.Create(t, pod)
		node := bound(t, env, pod)
		assert.Equal(t, "gpu", node.Labels[localcluster.LabelPool])
		perNode[node.Name]++
	}
	// Two GPU nodes of 4: the first is full before the second is used.
	assert.ElementsMatch(t, []int{4, 2}, values(perNode), "%v", perNode)
}

func TestPlainPodNeverLandsOnAGPUNode(t *testing.T) {
	env := setup(t)
	ns := env.Namespace(t, "")
	// Even asking for the GPU pool and tolerating its taint.
	pod := testutil.Pod("sneaky").Namespace(ns).SchedulerName("berth-scheduler").Obj()
	pod.Spec.NodeSelector = map[string]string{localcluster.LabelPool: "gpu"}
	pod.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	env.Create(t, pod)
	framework.Eventually(t, 30*time.Second, "the scheduler to refuse it", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && strings.Contains(c.Message, "kept for inference") {
				return true, err
			}
		}
		return false, err
	})
	assert.Empty(t, pod.Spec.NodeName)
}

func values(m map[string]int) []int {
	out := make([]int, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
