package buildcapacity

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
	"berth.dev/berth/pkg/placement"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
	"berth.dev/berth/webhooks"
)

func TestBuildsNeverExceedANodesBuildCapacity(t *testing.T) {
	env := framework.Cluster(t)
	framework.StartScheduler(t, env, nil)

	// Every local-SSD node holds two builds.
	var nodes corev1.NodeList
	require.NoError(t, env.Client.List(t.Context(), &nodes))
	slots := 0
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if n.Labels["berth.dev/local-ssd"] != "true" {
			continue
		}
		patch := client.MergeFrom(n.DeepCopy())
		n.Labels["berth.dev/build-capacity"] = "2"
		require.NoError(t, env.Client.Patch(t.Context(), n, patch))
		slots += 2
	}
	org := testutil.Org("builds").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)

	// A node already up is preferred over an empty one.
	ws := admitted(t, org, testutil.Pod("ws").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Resource(corev1.ResourceCPU, "1").Obj())
	env.Create(t, ws)
	wsNode := nodeOf(t, env, ws)
	first := admitted(t, org, testutil.Pod("build-00").Namespace(ns).Class(berthv1alpha1.ClassBuild).Obj())
	env.Create(t, first)
	assert.Equal(t, wsNode, nodeOf(t, env, first), "the first build joins the node already running")

	total := slots + 2
	for i := 1; i < total; i++ {
		env.Create(t, admitted(t, org, testutil.Pod(fmt.Sprintf("build-%02d", i)).Namespace(ns).Class(berthv1alpha1.ClassBuild).Obj()))
	}
	var pods corev1.PodList
	framework.Eventually(t, time.Minute, "every slot taken and the rest refused", func(ctx context.Context) (bool, error) {
		if err := env.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{berthv1alpha1.LabelClass: "build"}); err != nil {
			return false, err
		}
		bound, refused := 0, 0
		for _, p := range pods.Items {
			if p.Spec.NodeName != "" {
				bound++
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && strings.Contains(c.Message, "build capacity") {
					refused++
				}
			}
		}
		return bound == slots && refused == 2, nil
	})
	perNode := map[string]int{}
	for _, p := range pods.Items {
		if p.Spec.NodeName != "" {
			perNode[p.Spec.NodeName]++
		}
	}
	for n, c := range perNode {
		assert.LessOrEqual(t, c, 2, "builds on %s", n)
	}
}

func nodeOf(t *testing.T, env *framework.ClusterEnv, pod *corev1.Pod) string {
	t.Helper()
	framework.Eventually(t, 30*time.Second, "pod "+pod.Name+" bound", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return pod.Spec.NodeName != "", err
	})
	node := &corev1.Node{}
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Name: pod.Spec.NodeName}, node))
	assert.NotEqual(t, "gpu", node.Labels[localcluster.LabelPool])
	return pod.Spec.NodeName
}

// admitted is pod as berth's webhook writes it, placement included. This
// test runs no webhooks: berth admits a build only as a Job's Pod, and kwok
// completes a Job's Pods at once, while this test needs builds that stay on
// their nodes.
func admitted(t *testing.T, org *berthv1alpha1.Organization, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	keys, err := placement.Preset(placement.PresetAKS)
	require.NoError(t, err)
	class, ok := berthv1alpha1.ParseClass(pod.Labels[berthv1alpha1.LabelClass])
	require.True(t, ok)
	webhooks.MutatePod(&pod.ObjectMeta, &pod.Spec, webhooks.Target{
		Class: class, Org: org, Config: webhooks.Config{SchedulerName: webhooks.DefaultSchedulerName, Keys: keys},
	})
	return pod
}
