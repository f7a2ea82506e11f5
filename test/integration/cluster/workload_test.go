package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

func TestPoolsAreShapedLikeTheCloud(t *testing.T) {
	env := framework.Cluster(t)
	byPool, err := env.NodesByPool(t.Context())
	require.NoError(t, err)
	sizes := framework.DefaultPoolSizes()
	for _, p := range env.Pools.Pools {
		nodes := byPool[p.Name]
		require.Len(t, nodes, sizes[p.Name], "nodes in pool %s", p.Name)
		for _, n := range nodes {
			for k, v := range p.Labels {
				assert.Equal(t, v, n.Labels[k], "node %s label %s", n.Name, k)
			}
			assert.ElementsMatch(t, p.Taints, n.Spec.Taints, "node %s taints", n.Name)
		}
	}
	spot := byPool["spot-ssd"][0]
	assert.Equal(t, "spot", spot.Labels["kubernetes.azure.com/scalesetpriority"])
	assert.Equal(t, "3576Gi", ptrQ(spot.Status.Allocatable, corev1.ResourceEphemeralStorage))
	gpu := byPool["gpu"][0]
	assert.Equal(t, "4", ptrQ(gpu.Status.Allocatable, "nvidia.com/gpu"))
	assert.Equal(t, "true", gpu.Labels["nvidia.com/gpu.present"])

	framework.Eventually(t, time.Minute, "every node Ready", func(ctx context.Context) (bool, error) {
		n, err := localcluster.ReadyNodes(ctx, env.Client)
		return n == len(byPool["spot-ssd"])+len(byPool["on-demand"])+len(byPool["gpu"]), err
	})
}

func TestPlainJobIsScheduledAndCompletes(t *testing.T) {
	env := framework.Cluster(t)
	ns := env.Namespace(t, "")
	job := testutil.Job("hello").Namespace(ns).
		Resource(corev1.ResourceCPU, "1").Resource(corev1.ResourceMemory, "1Gi").Obj()
	env.Create(t, job)

	framework.Eventually(t, time.Minute, "Job hello to complete", func(ctx context.Context) (bool, error) {
		got := &batchv1.Job{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(job), got); err != nil {
			return false, err
		}
		for _, c := range got.Status.Conditions {
			if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})

	var pods corev1.PodList
	require.NoError(t, env.Client.List(t.Context(), &pods, client.InNamespace(ns), client.MatchingLabels{"job-name": "hello"}))
	require.Len(t, pods.Items, 1)
	pod := pods.Items[0]
	assert.Equal(t, corev1.PodSucceeded, pod.Status.Phase)
	node := &corev1.Node{}
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Name: pod.Spec.NodeName}, node))
	// A plain Pod tolerates neither the spot nor the GPU taint.
	assert.Equal(t, "on-demand", node.Labels[localcluster.LabelPool], "pod ran on %s", node.Name)
}

func ptrQ(l corev1.ResourceList, name corev1.ResourceName) string {
	q := l[name]
	return q.String()
}
