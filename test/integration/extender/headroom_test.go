package extender

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// TestExtenderKeepsHeadroomLikeThePlugin is where BerthPlacement's score
// decides against the stock scheduler's own: MostAllocated alone would fill
// the node at 7/8 to the brim, BerthPlacement prefers the half-full one,
// which stays under the 85% target. Both paths must choose it.
func TestExtenderKeepsHeadroomLikeThePlugin(t *testing.T) {
	env, _, extURL := setup(t)

	pools, err := env.NodesByPool(t.Context())
	require.NoError(t, err)
	var spot []string
	for _, n := range pools["spot-ssd"] {
		spot = append(spot, n.Name)
	}
	require.Len(t, spot, 3)
	slices.Sort(spot)
	full, half, empty := spot[0], spot[1], spot[2]

	// Fill the nodes with plain 2-CPU Pods bound by name, past any scheduler.
	fillers := env.Namespace(t, "")
	for node, n := range map[string]int{full: 7, half: 4} {
		for i := range n {
			env.Create(t, testutil.Pod(fmt.Sprintf("%s-%d", node, i)).Namespace(fillers).NodeName(node).
				Resource(corev1.ResourceCPU, "2").Resource(corev1.ResourceMemory, "4Gi").Obj())
		}
	}
	// The extender's scores once its cache holds them: a workspace takes the
	// full node to 100% (50 of 100), the half one to 62% (72) and the empty
	// one to 12% (14), scaled to 0-10.
	wantScores := extenderv1.HostPriorityList{{Host: full, Score: 5}, {Host: half, Score: 7}, {Host: empty, Score: 1}}
	waitScores(t, extURL, spot, wantScores)

	org := testutil.Org("extender-headroom").ClassDefault(berthv1alpha1.ClassWorkspace, "2", "4Gi").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)
	for _, scheduler := range []string{extenderSchedulerName, "berth-scheduler"} {
		pod := testutil.Pod("ws-" + scheduler).Namespace(ns).Class(berthv1alpha1.ClassWorkspace).User("ana").
			SchedulerName(scheduler).Obj()
		env.Create(t, pod)
		node := bound(t, env, pod)
		assert.Equal(t, half, node.Name, "%s keeps headroom: the half-full node, not the one at 7/8", scheduler)
		require.NoError(t, env.Client.Delete(t.Context(), pod, client.GracePeriodSeconds(0)))
		framework.Eventually(t, 30*time.Second, "pod "+pod.Name+" to be gone", func(ctx context.Context) (bool, error) {
			err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
			return client.IgnoreNotFound(err) == nil && err != nil, client.IgnoreNotFound(err)
		})
		waitScores(t, extURL, spot, wantScores)
	}
}

// waitScores waits until berth-extender scores the nodes for a 2-CPU
// workspace as want.
func waitScores(t *testing.T, extURL string, nodes []string, want extenderv1.HostPriorityList) {
	t.Helper()
	pod := testutil.Pod("probe").Class(berthv1alpha1.ClassWorkspace).
		Resource(corev1.ResourceCPU, "2").Resource(corev1.ResourceMemory, "4Gi").Obj()
	body, err := json.Marshal(extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nodes})
	require.NoError(t, err)
	var got extenderv1.HostPriorityList
	framework.Eventually(t, 30*time.Second, fmt.Sprintf("berth-extender to score %v", want), func(ctx context.Context) (bool, error) {
		got, err = prioritize(ctx, extURL, body)
		return assert.ObjectsAreEqual(want, got), err
	})
}
