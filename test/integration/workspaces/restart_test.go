package workspaces

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// TestManagerKilledDuringStopsAndWakes stops and wakes 20 workspaces four
// times over, killing berth-manager with SIGKILL at a random point of each
// round and starting it again: every workspace ends as asked, with one Pod
// if it runs and none if not, and every claim is kept. It restarts the
// package's berth-manager, so it runs alone (not in parallel).
func TestManagerKilledDuringStopsAndWakes(t *testing.T) {
	const n = 20
	env := setup(t)
	org := testutil.Org("ws-kill").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("ws-%02d", i)
		env.Create(t, workspace(ns, names[i], claim(t, env, ns, names[i]+"-home")))
	}
	for _, name := range names {
		waitPhase(t, env, ns, name, berthv1alpha1.WorkspaceRunning, 2*time.Minute)
	}

	rng := rand.New(rand.NewPCG(12, 6))
	started := true
	for round := range 4 {
		started = !started
		for _, name := range names {
			setStarted(t, env, ns, name, started)
		}
		after := time.Duration(rng.IntN(2000)) * time.Millisecond
		time.Sleep(after)
		t.Logf("round %d (started=%t): SIGKILL berth-manager %s after the last change", round, started, after)
		require.NoError(t, syscall.Kill(manager.PID(), syscall.SIGKILL))
		manager.Stop()
		manager = framework.StartPackageManager(t, env, framework.ManagerOptions{
			Args: []string{"--scheduler-name=", "--controllers=orgstatus,workspaces", "--v=1"},
		})
	}

	want := berthv1alpha1.WorkspaceStopped
	if started {
		want = berthv1alpha1.WorkspaceRunning
	}
	for _, name := range names {
		waitPhase(t, env, ns, name, want, 2*time.Minute)
	}
	framework.Eventually(t, time.Minute, "one Pod per running workspace, none left over", func(ctx context.Context) (bool, error) {
		count := map[string]int{}
		for _, p := range pods(t, env, ns) {
			count[p.Labels[berthv1alpha1.LabelWorkspace]]++
		}
		for _, name := range names {
			if (started && count[name] != 1) || (!started && count[name] != 0) {
				return false, nil
			}
		}
		return len(count) <= n, nil
	})
	var list berthv1alpha1.WorkspaceList
	require.NoError(t, env.Client.List(t.Context(), &list, client.InNamespace(ns)))
	assert.Len(t, list.Items, n, "no workspace deleted or added")
	for _, ws := range list.Items {
		assert.Equal(t, started, ws.Spec.Started, ws.Name)
		require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: ws.Name + "-home"}, &corev1.PersistentVolumeClaim{}), "claim of %s kept", ws.Name)
	}
}
