package workspaces

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// TestABuildWhoseNodeIsDeletedRunsAgain runs a build on a spot node and
// deletes the node, as a reclaimed spot VM's node is. The Pod GC fails the
// lost Pod with a DisruptionTarget condition (40 to 60 s after the delete),
// and the build runs again elsewhere and succeeds. Its backoffLimit is 0:
// had the loss counted, the Job would have failed. kwok keeps the build's
// Pods running until a fixed time past the Pod GC's: it would finish the
// lost Pod too, node or not. Like TestNodeLoss it cordons the other nodes
// for a while, so it runs alone.
func TestABuildWhoseNodeIsDeletedRunsAgain(t *testing.T) {
	env := setup(t)
	org := testutil.Org("build-spot").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)

	doomed, uncordon := spotNodeAlone(t, env, 901)
	defer uncordon()

	job := testutil.Job("build").Namespace(ns).Class(berthv1alpha1.ClassBuild).Obj()
	until := time.Now().Add(100 * time.Second).UTC().Format(time.RFC3339)
	job.Spec.Template.Annotations = map[string]string{localcluster.AnnotationRunFor: until}
	env.Create(t, job)

	buildPods := func(ctx context.Context) ([]corev1.Pod, error) {
		var list corev1.PodList
		err := env.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{"batch.kubernetes.io/job-name": job.Name})
		return list.Items, err
	}
	var first corev1.Pod
	framework.Eventually(t, 2*time.Minute, "the build running on the spot node", func(ctx context.Context) (bool, error) {
		pods, err := buildPods(ctx)
		if err != nil || len(pods) != 1 {
			return false, err
		}
		first = pods[0]
		return first.Status.Phase == corev1.PodRunning, nil
	})
	require.Equal(t, doomed.Name, first.Spec.NodeName)
	uncordon()
	require.NoError(t, env.Client.Delete(t.Context(), doomed))

	framework.Eventually(t, 3*time.Minute, "the build to finish", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(job), job)
		return jobFinished(job), err
	})
	assert.True(t, jobCondition(job, batchv1.JobComplete), "the build succeeds: %+v", job.Status.Conditions)
	assert.Equal(t, int32(1), job.Status.Succeeded)
	assert.Equal(t, int32(0), job.Status.Failed, "the lost Pod is not counted against the backoffLimit")
	pods, err := buildPods(t.Context())
	require.NoError(t, err)
	require.Len(t, pods, 1, "the lost Pod is gone and one replaced it")
	assert.NotEqual(t, first.UID, pods[0].UID)
	assert.NotEqual(t, doomed.Name, pods[0].Spec.NodeName)
	assert.Equal(t, corev1.PodSucceeded, pods[0].Status.Phase)
}

func jobFinished(job *batchv1.Job) bool {
	return jobCondition(job, batchv1.JobComplete) || jobCondition(job, batchv1.JobFailed)
}

func jobCondition(job *batchv1.Job, t batchv1.JobConditionType) bool {
	for _, c := range job.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}
