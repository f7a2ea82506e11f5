package admission

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/placement"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
	"berth.dev/berth/webhooks"
)

func TestBuildJobTemplateIsMutatedAndItsPodPassesUnchanged(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()).MaxConcurrentBuilds(5))
	ns := orgNamespace(t, env, org.Name)

	patchedBefore, unchangedBefore := podMutations(t, "patched"), podMutations(t, "unchanged")

	job := testutil.Job("build").Namespace(ns).Class(berthv1alpha1.ClassBuild).User("ana").Project("shop").
		Command("mvn", "package").Obj()
	env.Create(t, job)
	tmpl := job.Spec.Template
	assert.Equal(t, org.Name, job.Labels[berthv1alpha1.LabelOrg])
	assert.Equal(t, org.Name, tmpl.Labels[berthv1alpha1.LabelOrg])
	assert.Equal(t, "false", tmpl.Annotations[webhooks.AnnotationSafeToEvict])
	assert.Equal(t, "true", tmpl.Annotations[webhooks.AnnotationDoNotDisrupt])
	assert.NotEmpty(t, job.Annotations[berthv1alpha1.AnnotationQueuedAt], "builds are admitted through the queue")
	require.NotNil(t, job.Spec.PodFailurePolicy, "a build lost with its node runs again without using its backoffLimit")
	assert.Equal(t, batchv1.PodFailurePolicyActionIgnore, job.Spec.PodFailurePolicy.Rules[0].Action)
	assert.Equal(t, corev1.DisruptionTarget, job.Spec.PodFailurePolicy.Rules[0].OnPodConditions[0].Type)
	scratch := volume(tmpl.Spec.Volumes, webhooks.ScratchVolume)
	require.NotNil(t, scratch, "scratch volume")
	assert.Equal(t, "20Gi", scratch.EmptyDir.SizeLimit.String())
	main := tmpl.Spec.Containers[0]
	assert.Equal(t, "10Gi", ptr.To(main.Resources.Requests[corev1.ResourceEphemeralStorage]).String())
	assert.Equal(t, "20Gi", ptr.To(main.Resources.Limits[corev1.ResourceEphemeralStorage]).String())
	keys, err := placement.Preset(placement.PresetAKS)
	require.NoError(t, err)
	terms := tmpl.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	require.Len(t, terms, 1)
	assert.Contains(t, terms[0].MatchExpressions, keys.LocalSSD.Requirement(false))
	assert.Contains(t, tmpl.Spec.Tolerations, placement.Toleration(keys.SpotTaint))

	// The queue releases it; the Job controller creates its Pod from the
	// mutated template, and the Pod webhook finds nothing left to do.
	var pods corev1.PodList
	framework.Eventually(t, time.Minute, "the build's Pod", func(ctx context.Context) (bool, error) {
		err := env.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"job-name": "build"})
		return len(pods.Items) > 0, err
	})
	// The API server called the real Pod webhook before it stored the Pod,
	// and the webhook answered with no patch.
	assert.Equal(t, patchedBefore, podMutations(t, "patched"), "Pods the Pod webhook patched")
	assert.Equal(t, unchangedBefore+1, podMutations(t, "unchanged"), "Pods the Pod webhook left unchanged")
	pod := pods.Items[0].DeepCopy()
	again := pod.DeepCopy()
	target := webhooks.Target{Class: berthv1alpha1.ClassBuild, Org: org, Config: webhooks.Config{Keys: keys}}
	webhooks.MutatePod(&again.ObjectMeta, &again.Spec, target)
	assert.True(t, equality.Semantic.DeepEqual(pod.Spec, again.Spec), "mutating the Job's Pod again changes nothing")
	assert.Equal(t, tmpl.Spec.Affinity, pod.Spec.Affinity)
	assert.Equal(t, tmpl.Spec.SecurityContext, pod.Spec.SecurityContext)

	framework.Eventually(t, time.Minute, "the build to complete on a spot local-SSD node", func(ctx context.Context) (bool, error) {
		got := &batchv1.Job{}
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(job), got)
		return got.Status.Succeeded == 1, err
	})
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKeyFromObject(pod), pod))
	node := &corev1.Node{}
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Name: pod.Spec.NodeName}, node))
	assert.Equal(t, "spot-ssd", node.Labels["berth.dev/pool"])
}

func TestQueuedBuildsAreReleasedInOrder(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()).MaxConcurrentBuilds(1))
	ns := orgNamespace(t, env, org.Name)

	const n = 5
	var names []string
	for i := range n {
		name := "build-" + string(rune('a'+i))
		names = append(names, name)
		env.Create(t, testutil.Job(name).Namespace(ns).Class(berthv1alpha1.ClassBuild).Obj())
	}
	var jobs batchv1.JobList
	framework.Eventually(t, 2*time.Minute, "every build to complete", func(ctx context.Context) (bool, error) {
		err := env.Client.List(ctx, &jobs, client.InNamespace(ns))
		done := 0
		for _, j := range jobs.Items {
			done += int(j.Status.Succeeded)
		}
		return done == n, err
	})
	sort.Slice(jobs.Items, func(i, j int) bool {
		return jobs.Items[i].Status.StartTime.Before(jobs.Items[j].Status.StartTime) ||
			jobs.Items[i].Status.StartTime.Equal(jobs.Items[j].Status.StartTime) && jobs.Items[i].Name < jobs.Items[j].Name
	})
	for i, j := range jobs.Items {
		assert.Equal(t, names[i], j.Name, "release order")
		if i > 0 {
			prev := jobs.Items[i-1]
			// One slot: each build starts no earlier than the one before it ended.
			assert.False(t, j.Status.StartTime.Before(prev.Status.CompletionTime),
				"%s started at %s, before %s completed at %s", j.Name, j.Status.StartTime, prev.Name, prev.Status.CompletionTime)
		}
	}
}

func TestUsersCannotReleaseTheirOwnQueuedBuild(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()).MaxConcurrentBuilds(0))
	ns := orgNamespace(t, env, org.Name)
	job := testutil.Job("waiting").Namespace(ns).Class(berthv1alpha1.ClassBuild).Obj()
	env.Create(t, job)
	require.True(t, ptr.Deref(job.Spec.Suspend, false), "over quota, the build waits suspended")

	// A developer with edit rights in the namespace tries to unsuspend it.
	ana := developer(t, env, ns)
	got := &batchv1.Job{}
	require.NoError(t, ana.Get(t.Context(), client.ObjectKeyFromObject(job), got))
	// A merge patch, as kubectl patch sends: no resourceVersion, so the Job
	// controller's status writes cannot make it fail with a conflict first.
	unsuspend := client.MergeFrom(got.DeepCopy())
	got.Spec.Suspend = ptr.To(false)
	err := ana.Patch(t.Context(), got, unsuspend)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spec.suspend: Forbidden")
	assert.Contains(t, err.Error(), "berth releases queued builds in the order they came")

	// Raising the org's cap releases it.
	patch := client.MergeFrom(org.DeepCopy())
	org.Spec.MaxConcurrentBuilds = ptr.To[int32](1)
	require.NoError(t, env.Client.Patch(t.Context(), org, patch))
	framework.Eventually(t, time.Minute, "the build to be released", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(job), got)
		return !ptr.Deref(got.Spec.Suspend, true), err
	})
}

func volume(vs []corev1.Volume, name string) *corev1.Volume {
	for i := range vs {
		if vs[i].Name == name {
			return &vs[i]
		}
	}
	return nil
}

func TestBuildGetsTheOrgsCache(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()).BuildCacheClaim("m2-cache").BuildScratch("5Gi", "8Gi"))
	ns := orgNamespace(t, env, org.Name)

	job := testutil.Job("cached").Namespace(ns).Class(berthv1alpha1.ClassBuild).Command("gradle", "build").Obj()
	env.Create(t, job)
	spec := job.Spec.Template.Spec
	cache := volume(spec.Volumes, webhooks.CacheVolume)
	require.NotNil(t, cache, "cache volume")
	require.NotNil(t, cache.PersistentVolumeClaim, "the cache is the org's PVC")
	assert.Equal(t, "m2-cache", cache.PersistentVolumeClaim.ClaimName)
	scratch := volume(spec.Volumes, webhooks.ScratchVolume)
	require.NotNil(t, scratch, "scratch volume")
	assert.Equal(t, "8Gi", scratch.EmptyDir.SizeLimit.String(), "the org's scratch limit")
	main := spec.Containers[0]
	assert.Equal(t, "5Gi", ptr.To(main.Resources.Requests[corev1.ResourceEphemeralStorage]).String())
	assert.Equal(t, "8Gi", ptr.To(main.Resources.Limits[corev1.ResourceEphemeralStorage]).String())
	assert.Contains(t, main.VolumeMounts, corev1.VolumeMount{Name: webhooks.CacheVolume, MountPath: webhooks.CacheMountPath})
	assert.Contains(t, main.VolumeMounts, corev1.VolumeMount{Name: webhooks.ScratchVolume, MountPath: "/workspace"})
	assert.Contains(t, main.Env, corev1.EnvVar{Name: "MAVEN_OPTS", Value: "-Dmaven.repo.local=/cache/m2"})
	assert.Contains(t, main.Env, corev1.EnvVar{Name: "GRADLE_USER_HOME", Value: "/cache/gradle"})
}

// A build cannot ask for less disk than the org sized builds for: the
// scheduler and autoscalers fit builds on a node's disk by their requests,
// so a tiny request would let one tenant's builds fill a disk other
// tenants' Pods share.
func TestABuildCannotAskForLessDiskThanTheOrgsScratch(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()))
	ns := orgNamespace(t, env, org.Name)

	job := testutil.Job("small-disk").Namespace(ns).Class(berthv1alpha1.ClassBuild).Command("make").
		Resource(corev1.ResourceEphemeralStorage, "1Mi").Obj()
	env.Create(t, job)
	main := job.Spec.Template.Spec.Containers[0]
	assert.Equal(t, "10Gi", ptr.To(main.Resources.Requests[corev1.ResourceEphemeralStorage]).String(), "the org's scratch request")
	assert.Equal(t, "10Gi", ptr.To(main.Resources.Limits[corev1.ResourceEphemeralStorage]).String(), "a limit below the request is raised with it")
}
