// Package e2e holds berth's end-to-end tests: each runs against a cluster
// with berth on it, from the provider E2E_PROVIDER names (framework.Berth):
// the local cluster with berth beside it, which CI runs, or a kind cluster
// with berth installed from its chart (make kind-up). They reach berth only
// through the API server, as a developer does, and create every name anew,
// so that they can run again on a cluster that outlives them.
package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

func TestMain(m *testing.M) { framework.Main(m) }

// TestAWorkspaceIsHardenedPlacedAndCounted: a developer's labelled Pod, in
// a namespace that enforces Pod Security restricted, is admitted hardened,
// placed by berth-scheduler on a spot local-SSD node, runs, and is recorded
// as a Workspace; a second one is over the org's quota and refused with
// the field to raise.
func TestAWorkspaceIsHardenedPlacedAndCounted(t *testing.T) {
	env := framework.Berth(t)
	org := testutil.Org("e2e-ws-"+rand.String(5)).MaxWorkspaces(1).ClassDefault(berthv1alpha1.ClassWorkspace, "500m", "1Gi").Obj()
	env.Create(t, org)
	ns := restrictedNamespace(t, env, org.Name)

	pod := testutil.Pod("ws").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).User("ana").Obj()
	env.Create(t, pod)
	assert.Equal(t, "berth-scheduler", pod.Spec.SchedulerName)
	assert.True(t, ptr.Deref(pod.Spec.SecurityContext.RunAsNonRoot, false), "runAsNonRoot")
	assert.Equal(t, "500m", pod.Spec.Containers[0].Resources.Requests.Cpu().String(), "the org's default request")
	framework.Eventually(t, 3*time.Minute, "the workspace Running", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return pod.Status.Phase == corev1.PodRunning, err
	})
	node := &corev1.Node{}
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Name: pod.Spec.NodeName}, node))
	assert.Equal(t, "spot-ssd", node.Labels[localcluster.LabelPool], "on a spot local-SSD node")
	framework.Eventually(t, time.Minute, "its Workspace Running", func(ctx context.Context) (bool, error) {
		ws := &berthv1alpha1.Workspace{}
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), ws)
		return ws.Status.Phase == berthv1alpha1.WorkspaceRunning && ws.Status.PodUID == pod.UID, client.IgnoreNotFound(err)
	})

	err := env.Client.Create(t.Context(), testutil.Pod("ws-2").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).User("ana").Obj())
	require.Error(t, err, "a second workspace is over maxWorkspaces 1")
	assert.True(t, apierrors.IsForbidden(err), "%v", err)
	assert.Contains(t, err.Error(), "spec.maxWorkspaces")
}

// TestBuildsWaitForTheOrgsSlot: with one build slot, the first of two
// build Jobs runs and the second waits suspended, with no Pod; when the
// first is deleted, the second is released.
func TestBuildsWaitForTheOrgsSlot(t *testing.T) {
	env := framework.Berth(t)
	org := testutil.Org("e2e-build-" + rand.String(5)).MaxConcurrentBuilds(1).Obj()
	env.Create(t, org)
	ns := restrictedNamespace(t, env, org.Name)

	var jobs []*batchv1.Job
	for _, name := range []string{"build-1", "build-2"} {
		job := testutil.Job(name).Namespace(ns).Class(berthv1alpha1.ClassBuild).User("ana").Obj()
		// Runs until deleted: kwok's nodes hold it this long, and the
		// image's process (pause) never ends on a real node.
		job.Spec.Template.Annotations = map[string]string{localcluster.AnnotationRunFor: "1h"}
		env.Create(t, job)
		jobs = append(jobs, job)
		if name == "build-1" {
			framework.Eventually(t, time.Minute, "build-1 released", func(ctx context.Context) (bool, error) {
				err := env.Client.Get(ctx, client.ObjectKeyFromObject(job), job)
				return !ptr.Deref(job.Spec.Suspend, true), err
			})
		}
	}
	framework.Eventually(t, 3*time.Minute, "build-1's Pod Running", func(ctx context.Context) (bool, error) {
		pods, err := podsOf(ctx, env, jobs[0])
		return len(pods) == 1 && pods[0].Status.Phase == corev1.PodRunning, err
	})
	framework.Eventually(t, time.Minute, "the org's status: one build running, one queued", func(ctx context.Context) (bool, error) {
		got := &berthv1alpha1.Organization{}
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(org), got)
		return got.Status.RunningBuilds == 1 && got.Status.QueuedBuilds == 1, err
	})
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKeyFromObject(jobs[1]), jobs[1]))
	assert.True(t, ptr.Deref(jobs[1].Spec.Suspend, false), "build-2 waits suspended")
	pods, err := podsOf(t.Context(), env, jobs[1])
	require.NoError(t, err)
	assert.Empty(t, pods, "a queued build has no Pod")

	require.NoError(t, env.Client.Delete(t.Context(), jobs[0], client.PropagationPolicy("Background")))
	framework.Eventually(t, 2*time.Minute, "build-2 released once build-1 is gone", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(jobs[1]), jobs[1])
		return !ptr.Deref(jobs[1].Spec.Suspend, true), err
	})
}

// TestATenantCannotMoveItsPodToAnotherOrg: the org comes from the
// namespace, and berth's labels cannot be changed on a running Pod.
func TestATenantCannotMoveItsPodToAnotherOrg(t *testing.T) {
	env := framework.Berth(t)
	org := testutil.Org("e2e-tenant-" + rand.String(5)).Obj()
	env.Create(t, org)
	ns := restrictedNamespace(t, env, org.Name)

	pod := testutil.Pod("ws").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).User("ana").Obj()
	env.Create(t, pod)
	assert.Equal(t, org.Name, pod.Labels[berthv1alpha1.LabelOrg], "the org is the namespace's")
	for label, value := range map[string]string{berthv1alpha1.LabelOrg: "victim", berthv1alpha1.LabelClass: string(berthv1alpha1.ClassInference)} {
		patch := client.MergeFrom(pod.DeepCopy())
		moved := pod.DeepCopy()
		moved.Labels[label] = value
		err := env.Client.Patch(t.Context(), moved, patch)
		require.Error(t, err, "changing %s", label)
		assert.True(t, apierrors.IsForbidden(err) || apierrors.IsInvalid(err), "%v", err)
	}
}

// restrictedNamespace is a namespace of org whose Pods the API server's
// own Pod Security admission holds to restricted: every Pod berth admits
// there must pass it.
func restrictedNamespace(t *testing.T, env *framework.ClusterEnv, org string) string {
	t.Helper()
	ns := env.Namespace(t, org)
	obj := &corev1.Namespace{}
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Name: ns}, obj))
	patch := client.MergeFrom(obj.DeepCopy())
	obj.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	require.NoError(t, env.Client.Patch(t.Context(), obj, patch))
	return ns
}

func podsOf(ctx context.Context, env *framework.ClusterEnv, job *batchv1.Job) ([]corev1.Pod, error) {
	var pods corev1.PodList
	err := env.Client.List(ctx, &pods, client.InNamespace(job.Namespace), client.MatchingLabels{batchv1.JobNameLabel: job.Name})
	return pods.Items, err
}
