package workspaces

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// A plain labelled Pod is recorded as a Workspace. Its generic ephemeral
// volume's claim, which the garbage collector would delete with the Pod,
// passes to the Workspace. The user's delete of the Pod is a stop that
// keeps both claims; a wake starts a new Pod, through admission, on the
// same claims.
func TestPodBecomesWorkspaceAndDeleteIsAStop(t *testing.T) {
	t.Parallel()
	env := setup(t)
	org := testutil.Org("ws-adopt").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)
	home := claim(t, env, ns, "ana-home")
	volumeFor(t, env, ns, "ide-scratch") // for the ephemeral volume's claim
	pod := testutil.Pod("ide").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).User("ana").Obj()
	mountClaim(pod, home)
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{
		Ephemeral: &corev1.EphemeralVolumeSource{VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName: new(string),
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: claimSize}},
			},
		}},
	}})
	require.NoError(t, env.Client.Create(t.Context(), pod))

	ws := waitPhase(t, env, ns, "ide", berthv1alpha1.WorkspaceRunning, time.Minute)
	assert.True(t, ws.Spec.Started)
	assert.Equal(t, "ide", ws.Status.PodName)
	assert.Equal(t, []string{home, "ide-scratch"}, ws.Status.Claims)
	assert.Equal(t, "ana", ws.Labels[berthv1alpha1.LabelUser])
	// The Workspace owns the ephemeral claim too; the Pod stays its
	// controller, which the scheduler and the kubelet require.
	framework.Eventually(t, 30*time.Second, "the ephemeral claim owned by the Workspace too", func(ctx context.Context) (bool, error) {
		pvc := &corev1.PersistentVolumeClaim{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "ide-scratch"}, pvc); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return slices.ContainsFunc(pvc.OwnerReferences, func(r metav1.OwnerReference) bool { return r.UID == ws.UID }) &&
			metav1.IsControlledBy(pvc, pod), nil
	})

	require.NoError(t, env.Client.Delete(t.Context(), pod))
	ws = waitPhase(t, env, ns, "ide", berthv1alpha1.WorkspaceStopped, time.Minute)
	assert.False(t, ws.Spec.Started, "a user's delete stops the workspace")
	assert.Equal(t, berthv1alpha1.StoppedUser, ws.Status.StoppedBy)
	time.Sleep(3 * time.Second) // it must not come back by itself, and the garbage collector has had its chance
	assert.Empty(t, pods(t, env, ns), "a stopped workspace has no Pod")
	for _, name := range []string{home, "ide-scratch"} {
		pvc := &corev1.PersistentVolumeClaim{}
		require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, pvc), "claim %s is kept", name)
		assert.Nil(t, pvc.DeletionTimestamp, "claim %s is kept", name)
	}

	setStarted(t, env, ns, "ide", true)
	ws = waitPhase(t, env, ns, "ide", berthv1alpha1.WorkspaceRunning, time.Minute)
	assert.NotEqual(t, "ide", ws.Status.PodName, "a wake never waits for the old Pod's name")
	running := &corev1.Pod{}
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: ws.Status.PodName}, running))
	assert.Equal(t, home, running.Spec.Volumes[0].PersistentVolumeClaim.ClaimName, "the same claim")
	assert.Equal(t, "ide-scratch", running.Spec.Volumes[1].PersistentVolumeClaim.ClaimName, "the ephemeral volume's claim, kept")

	// Stopped again, the workspace is started by a labelled Pod of its name,
	// as the developer first made it.
	setStarted(t, env, ns, "ide", false)
	waitPhase(t, env, ns, "ide", berthv1alpha1.WorkspaceStopped, time.Minute)
	again := testutil.Pod("ide").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).User("ana").Obj()
	mountClaim(again, home)
	require.NoError(t, env.Client.Create(t.Context(), again))
	ws = waitPhase(t, env, ns, "ide", berthv1alpha1.WorkspaceRunning, time.Minute)
	assert.True(t, ws.Spec.Started, "a Pod made for a stopped workspace starts it")
	assert.Equal(t, "ide", ws.Status.PodName)
	assert.Equal(t, org.Name, running.Labels[berthv1alpha1.LabelOrg], "the new Pod went through berth's admission")
	assert.Equal(t, "ide", running.Labels[berthv1alpha1.LabelWorkspace])
	assert.Empty(t, ws.Status.StoppedBy)
}

// A workspace without activity stops after the org's idleTimeout; one whose
// gateway sends heartbeats keeps running, and so does one that sends none
// but uses CPU (kwok reports its use, metrics-server serves it).
func TestIdleStopHeartbeatAndCPU(t *testing.T) {
	t.Parallel()
	env := setup(t)
	org := testutil.Org("ws-idle").IdleTimeout(metav1.Duration{Duration: time.Minute}).Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)
	env.Create(t, workspace(ns, "quiet", ""))
	env.Create(t, workspace(ns, "busy", ""))
	// A heartbeat a day ahead would keep a workspace from ever stopping.
	cheat := workspace(ns, "cheat", "")
	cheat.Annotations = map[string]string{berthv1alpha1.AnnotationLastActivity: time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)}
	env.Create(t, cheat)
	building := workspace(ns, "building", "")
	building.Spec.Template.Annotations = map[string]string{"kwok.x-k8s.io/usage-cpu": "1500m"}
	env.Create(t, building)
	keptBefore, err := manager.MetricValue("berth_workspace_kept_busy_total")
	require.NoError(t, err)
	busy := waitPhase(t, env, ns, "busy", berthv1alpha1.WorkspaceRunning, time.Minute)
	before, err := manager.MetricValue("berth_workspace_stops_total", `reason="idle"`)
	require.NoError(t, err)

	// The IDE gateway's heartbeat, every 10 s.
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			pod := &corev1.Pod{}
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: busy.Status.PodName}, pod); err == nil {
				patch := client.MergeFrom(pod.DeepCopy())
				metav1.SetMetaDataAnnotation(&pod.ObjectMeta, berthv1alpha1.AnnotationLastActivity, time.Now().UTC().Format(time.RFC3339))
				_ = env.Client.Patch(ctx, pod, patch)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Second):
			}
		}
	})
	defer wg.Wait()
	defer cancel()

	quiet := waitPhase(t, env, ns, "quiet", berthv1alpha1.WorkspaceStopped, 2*time.Minute)
	assert.Equal(t, berthv1alpha1.StoppedIdle, quiet.Status.StoppedBy)
	assert.False(t, quiet.Spec.Started)
	idleFor := quiet.Status.StoppedAt.Sub(quiet.Status.StartedAt.Time)
	assert.GreaterOrEqual(t, idleFor, time.Minute, "stopped no earlier than the idleTimeout")
	assert.Less(t, idleFor, 90*time.Second, "stopped soon after the idleTimeout")
	cheated := waitPhase(t, env, ns, "cheat", berthv1alpha1.WorkspaceStopped, 30*time.Second)
	assert.Equal(t, berthv1alpha1.StoppedIdle, cheated.Status.StoppedBy, "a heartbeat from the future does not count")
	after, err := manager.MetricValue("berth_workspace_stops_total", `reason="idle"`)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, after-before, 2.0, "the stops are counted")

	// metrics-server has the building workspace's CPU use after two
	// scrapes; berth asks for it until a minute past the deadline.
	framework.Eventually(t, 90*time.Second, "the CPU use to keep a workspace", func(ctx context.Context) (bool, error) {
		kept, err := manager.MetricValue("berth_workspace_kept_busy_total")
		return kept > keptBefore, err
	})
	for _, name := range []string{"busy", "building"} {
		ws := &berthv1alpha1.Workspace{}
		require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, ws))
		assert.Equal(t, berthv1alpha1.WorkspaceRunning, ws.Status.Phase, "%s: a heartbeat or CPU use keeps a workspace running", name)
		assert.True(t, ws.Spec.Started, name)
	}
	for _, p := range pods(t, env, ns) {
		assert.Contains(t, []string{"busy", "building"}, p.Labels[berthv1alpha1.LabelWorkspace], "only the active workspaces have a Pod")
	}
}

// A wake over the org's quota is refused with the quota's message on the
// Workspace, which stays stopped; once a slot is free, it wakes.
func TestWakeOverQuota(t *testing.T) {
	t.Parallel()
	env := setup(t)
	org := testutil.Org("ws-quota").MaxWorkspaces(1).Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)
	env.Create(t, workspace(ns, "first", ""))
	waitPhase(t, env, ns, "first", berthv1alpha1.WorkspaceRunning, time.Minute)

	env.Create(t, workspace(ns, "second", ""))
	var ws *berthv1alpha1.Workspace
	framework.Eventually(t, time.Minute, "the second wake refused", func(ctx context.Context) (bool, error) {
		ws = &berthv1alpha1.Workspace{}
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "second"}, ws)
		return err == nil && !ws.Spec.Started && ws.Status.Phase == berthv1alpha1.WorkspaceStopped, err
	})
	assert.Contains(t, ws.Status.Message, `Organization "ws-quota"`, "the message names the org")
	assert.Contains(t, ws.Status.Message, "spec.maxWorkspaces", "and the limit")
	assert.Contains(t, ws.Status.Message, "1 of its 1", "and what is using it")
	cond := findCondition(ws.Status.Conditions, "StartFailed")
	require.NotNil(t, cond)
	assert.Equal(t, metav1.ConditionTrue, cond.Status)

	setStarted(t, env, ns, "first", false)
	waitPhase(t, env, ns, "first", berthv1alpha1.WorkspaceStopped, time.Minute)
	// The ledger frees the slot once the Pod is gone.
	framework.Eventually(t, time.Minute, "the second wake admitted", func(ctx context.Context) (bool, error) {
		ws := &berthv1alpha1.Workspace{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "second"}, ws); err != nil {
			return false, err
		}
		if ws.Status.Phase == berthv1alpha1.WorkspaceRunning {
			return true, nil
		}
		if !ws.Spec.Started {
			patch := client.MergeFrom(ws.DeepCopy())
			ws.Spec.Started = true
			return false, env.Client.Patch(ctx, ws, patch)
		}
		return false, nil
	})
	ws = waitPhase(t, env, ns, "second", berthv1alpha1.WorkspaceRunning, time.Second)
	assert.Nil(t, findCondition(ws.Status.Conditions, "StartFailed"), "a later start clears the failure")
}

// A Workspace whose template berth does not admit fails to start with the
// admission's message, naming the field.
func TestBadTemplateIsRefused(t *testing.T) {
	t.Parallel()
	env := setup(t)
	org := testutil.Org("ws-bad").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)
	ws := workspace(ns, "root", "")
	ws.Spec.Template.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
	env.Create(t, ws)
	// berth records the refusal, then ends the wake.
	framework.Eventually(t, time.Minute, "the start refused and the wake ended", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(ws), ws)
		return err == nil && findCondition(ws.Status.Conditions, "StartFailed") != nil && !ws.Spec.Started, err
	})
	assert.Contains(t, ws.Status.Message, "privileged")
	assert.Equal(t, berthv1alpha1.WorkspaceStopped, ws.Status.Phase)
	assert.Empty(t, pods(t, env, ns))
}

func findCondition(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}

// Fifty workspaces woken at once each get exactly one Pod, and none is
// deleted on the way: the controller works on several workspaces at once,
// and a cache that has seen the new Pod but not the Workspace's new status
// must not take that Pod for a leftover.
func TestBurstOfWakesStartsEachOnce(t *testing.T) {
	t.Parallel()
	const n = 50
	env := setup(t)
	org := testutil.Org("ws-burst").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("ide-%02d", i)
		ws := workspace(ns, names[i], "")
		ws.Spec.Started = false
		env.Create(t, ws)
	}
	for _, name := range names {
		waitPhase(t, env, ns, name, berthv1alpha1.WorkspaceStopped, time.Minute)
	}
	// The watch resumes where it was should the API server close it: a
	// closed watch would end the count early.
	wc := env.WatchClient(t)
	var before corev1.PodList
	require.NoError(t, wc.List(t.Context(), &before, client.InNamespace(ns)))
	w, err := watchtools.NewRetryWatcherWithContext(t.Context(), before.ResourceVersion, podWatcher{wc, ns})
	require.NoError(t, err)
	defer w.Stop()

	var wg sync.WaitGroup
	for _, name := range names {
		wg.Go(func() { setStarted(t, env, ns, name, true) })
	}
	wg.Wait()
	for _, name := range names {
		waitPhase(t, env, ns, name, berthv1alpha1.WorkspaceRunning, 2*time.Minute)
	}
	created, deleted := map[string]bool{}, map[string]bool{}
	for done := false; !done; {
		select {
		case ev, open := <-w.ResultChan():
			require.True(t, open, "the Pod watch ended")
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			if ev.Type == watch.Added {
				created[p.Name] = true
			}
			if ev.Type == watch.Deleted || p.DeletionTimestamp != nil {
				deleted[p.Name] = true
			}
		case <-time.After(time.Second):
			done = true
		}
	}
	assert.Len(t, created, n, "one Pod created per wake")
	assert.Empty(t, deleted, "Pods deleted during the wakes")
	assert.Len(t, pods(t, env, ns), n)
}

// A platform team that lowers an org's idleTimeout lowers it for the
// workspaces already running, not only for those started after.
func TestLoweredIdleTimeoutApplies(t *testing.T) {
	t.Parallel()
	env := setup(t)
	org := testutil.Org("ws-lowered").Obj() // the default 30m
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)
	env.Create(t, workspace(ns, "ide", ""))
	waitPhase(t, env, ns, "ide", berthv1alpha1.WorkspaceRunning, time.Minute)

	patch := client.MergeFrom(org.DeepCopy())
	org.Spec.IdleTimeout = &metav1.Duration{Duration: time.Minute}
	require.NoError(t, env.Client.Patch(t.Context(), org, patch))
	ws := waitPhase(t, env, ns, "ide", berthv1alpha1.WorkspaceStopped, 2*time.Minute)
	assert.Equal(t, berthv1alpha1.StoppedIdle, ws.Status.StoppedBy)
}

// podWatcher watches a namespace's Pods for a RetryWatcher.
type podWatcher struct {
	c  client.WithWatch
	ns string
}

func (p podWatcher) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return p.c.Watch(ctx, &corev1.PodList{}, client.InNamespace(p.ns), &client.ListOptions{Raw: &opts})
}
