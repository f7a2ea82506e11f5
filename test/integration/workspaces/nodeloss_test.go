package workspaces

import (
	"context"
	"fmt"
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

const lostWorkspaces = 20

// TestNodeLoss puts 20 workspaces, each with its claim, on one spot node and
// deletes the node, as a reclaimed spot VM's node is: every workspace runs
// again on another node with the same claim, and counts as a spot loss, not
// a stop. It cordons the other nodes while it fills its own, so it runs
// alone (not in parallel).
func TestNodeLoss(t *testing.T) {
	env := setup(t)
	org := testutil.Org("ws-spot").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)

	doomed, uncordon := spotNodeAlone(t, env, 900)
	defer uncordon()

	claims := map[string]string{}
	for i := range lostWorkspaces {
		name := fmt.Sprintf("ws-%02d", i)
		claims[name] = claim(t, env, ns, name+"-home")
		env.Create(t, workspace(ns, name, claims[name]))
	}
	for name := range claims {
		ws := waitPhase(t, env, ns, name, berthv1alpha1.WorkspaceRunning, 2*time.Minute)
		require.Equal(t, doomed.Name, ws.Status.NodeName)
	}
	before, err := manager.MetricValue("berth_workspace_stops_total", `reason="spot-loss"`)
	require.NoError(t, err)
	uncordon()

	start := time.Now()
	require.NoError(t, env.Client.Delete(t.Context(), doomed))
	back := map[string]time.Duration{}
	framework.Eventually(t, 3*time.Minute, "every workspace running on another node", func(ctx context.Context) (bool, error) {
		var list berthv1alpha1.WorkspaceList
		if err := env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, ws := range list.Items {
			if _, done := back[ws.Name]; !done && ws.Status.Phase == berthv1alpha1.WorkspaceRunning && ws.Status.NodeName != doomed.Name {
				back[ws.Name] = time.Since(start)
			}
		}
		return len(back) == lostWorkspaces, nil
	})
	var worst time.Duration
	for _, d := range back {
		worst = max(worst, d)
	}
	t.Logf("%d workspaces of a deleted node running again; the last after %s", lostWorkspaces, worst.Round(time.Millisecond))

	var list berthv1alpha1.WorkspaceList
	require.NoError(t, env.Client.List(t.Context(), &list, client.InNamespace(ns)))
	for _, ws := range list.Items {
		assert.True(t, ws.Spec.Started, "%s: a loss is not a stop", ws.Name)
		pod := &corev1.Pod{}
		require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: ws.Status.PodName}, pod))
		assert.Equal(t, claims[ws.Name], pod.Spec.Volumes[0].PersistentVolumeClaim.ClaimName, "%s: the same claim", ws.Name)
	}
	running := map[string]int{}
	for _, p := range pods(t, env, ns) {
		running[p.Labels[berthv1alpha1.LabelWorkspace]]++
	}
	for name := range claims {
		assert.Equal(t, 1, running[name], "workspace %s has exactly one Pod", name)
	}
	after, err := manager.MetricValue("berth_workspace_stops_total", `reason="spot-loss"`)
	require.NoError(t, err)
	assert.Equal(t, float64(lostWorkspaces), after-before, "each loss counted once")
}

// spotNodeAlone creates spot node number n, to be deleted by the test (it
// is deleted at the end if it still exists), and cordons every other node
// until the returned func (or the test's end) undoes it.
func spotNodeAlone(t *testing.T, env *framework.ClusterEnv, n int) (*corev1.Node, func()) {
	t.Helper()
	pools, err := localcluster.DefaultPools()
	require.NoError(t, err)
	spot, ok := pools.Get("spot-ssd")
	require.True(t, ok)
	node := spot.Node(n)
	require.NoError(t, env.Client.Create(t.Context(), node))
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), node) })
	return node, cordonAllBut(t, env, node.Name)
}

// cordonAllBut marks every node but one unschedulable and returns what
// undoes it (once).
func cordonAllBut(t *testing.T, env *framework.ClusterEnv, keep string) func() {
	t.Helper()
	var nodes corev1.NodeList
	require.NoError(t, env.Client.List(t.Context(), &nodes))
	var cordoned []string
	set := func(name string, unschedulable bool) error {
		node := &corev1.Node{}
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, node); err != nil {
			return err
		}
		patch := client.MergeFrom(node.DeepCopy())
		node.Spec.Unschedulable = unschedulable
		return env.Client.Patch(context.Background(), node, patch)
	}
	for _, n := range nodes.Items {
		if n.Name == keep || n.Spec.Unschedulable {
			continue
		}
		require.NoError(t, set(n.Name, true))
		cordoned = append(cordoned, n.Name)
	}
	done := false
	undo := func() {
		if done {
			return
		}
		done = true
		for _, name := range cordoned {
			if err := set(name, false); err != nil {
				t.Errorf("uncordon %s: %v", name, err)
			}
		}
	}
	t.Cleanup(undo)
	return undo
}
