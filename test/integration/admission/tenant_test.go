package admission

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/quota"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
	"berth.dev/berth/webhooks"
)

// The tests of this file play a developer with edit rights in one
// namespace who tries to hurt another tenant, the nodes or the bill.

const gpu corev1.ResourceName = "nvidia.com/gpu"

const labelsFixed = "cannot be added, changed or removed"

// relabel patches obj's labels as kubectl label does.
func relabel(ctx context.Context, env *framework.ClusterEnv, obj client.Object, k, v string) error {
	patch := client.MergeFrom(obj.DeepCopyObject().(client.Object))
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	if v == "" {
		delete(labels, k)
	} else {
		labels[k] = v
	}
	obj.SetLabels(labels)
	return env.Client.Patch(ctx, obj, patch)
}

func orgStatus(ctx context.Context, env *framework.ClusterEnv, org *berthv1alpha1.Organization) (berthv1alpha1.OrganizationStatus, error) {
	got := &berthv1alpha1.Organization{}
	err := env.Client.Get(ctx, client.ObjectKeyFromObject(org), got)
	return got.Status, err
}

func ledgerEntries(ctx context.Context, env *framework.ClusterEnv, org string) (int, error) {
	cm := &corev1.ConfigMap{}
	err := env.Client.Get(ctx, client.ObjectKey{Namespace: "berth-system", Name: quota.Name(org)}, cm)
	return strings.Count(cm.Data[quota.DataKey], "\n"), client.IgnoreNotFound(err)
}

// The org is the namespace's: a Pod or Job that names another org in a
// label takes nothing of that org's quota, and berth's labels cannot be
// added, changed or removed after admission.
func TestAnotherOrgsLabelTakesNothingOfIts(t *testing.T) {
	env := setup(t)
	ctx := t.Context()
	victim := newOrg(t, env, testutil.Org(orgName()).MaxGPUs(2).MaxWorkspaces(1).MaxConcurrentBuilds(1))
	attacker := newOrg(t, env, testutil.Org(orgName()))
	vns := orgNamespace(t, env, victim.Name)
	ans := env.Namespace(t, attacker.Name)

	// An unlabelled Pod that names the victim and 1000 GPUs, then labelled.
	squat := testutil.Pod("squat").Namespace(ans).Label(berthv1alpha1.LabelOrg, victim.Name).Resource(gpu, "1000").Obj()
	env.Create(t, squat)
	err := relabel(ctx, env, squat, berthv1alpha1.LabelClass, string(berthv1alpha1.ClassInference))
	require.Error(t, err, "adding the class label later")
	assert.Contains(t, err.Error(), labelsFixed)

	// A Job that runs nothing, named the victim's, then labelled a build.
	hold := testutil.Job("hold").Namespace(ans).Label(berthv1alpha1.LabelOrg, victim.Name).Obj()
	hold.Spec.Parallelism = ptr.To[int32](0)
	env.Create(t, hold)
	err = relabel(ctx, env, hold, berthv1alpha1.LabelClass, string(berthv1alpha1.ClassBuild))
	require.Error(t, err)
	assert.Contains(t, err.Error(), labelsFixed)

	// A build created in the attacker's namespace is the attacker's, whatever
	// its label said, and it cannot be moved to the victim later.
	b := testutil.Job("build").Namespace(ans).Class(berthv1alpha1.ClassBuild).Label(berthv1alpha1.LabelOrg, victim.Name).Obj()
	b.Spec.Parallelism = ptr.To[int32](0)
	env.Create(t, b)
	assert.Equal(t, attacker.Name, b.Labels[berthv1alpha1.LabelOrg])
	err = relabel(ctx, env, b, berthv1alpha1.LabelOrg, victim.Name)
	require.Error(t, err)
	assert.Contains(t, err.Error(), labelsFixed)
	err = relabel(ctx, env, b, berthv1alpha1.LabelClass, "")
	require.Error(t, err, "removing the class label")

	// The victim keeps all it has: its GPUs, its workspace, its build slot.
	env.Create(t, testutil.Pod("vllm").Namespace(vns).Class(berthv1alpha1.ClassInference).Resource(gpu, "2").Obj())
	env.Create(t, testutil.Pod("ws").Namespace(vns).Class(berthv1alpha1.ClassWorkspace).Obj())
	vb := testutil.Job("build").Namespace(vns).Class(berthv1alpha1.ClassBuild).Obj()
	env.Create(t, vb)
	framework.Eventually(t, time.Minute, "the victim's build released", func(ctx context.Context) (bool, error) {
		got := &batchv1.Job{}
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(vb), got)
		return !ptr.Deref(got.Spec.Suspend, true), err
	})
	framework.Eventually(t, 30*time.Second, "the victim's status counts only its own", func(ctx context.Context) (bool, error) {
		s, err := orgStatus(ctx, env, victim)
		return s.GPUs == 2 && s.Workspaces == 1, err
	})
}

// kubectl debug adds an ephemeral container and kubectl edit --subresource
// resize changes a running Pod's resources: neither undoes what berth
// admitted. Tolerations added later are checked as at create.
func TestSubresourcesAndUpdatesKeepThePodSafe(t *testing.T) {
	env := setup(t)
	ctx := t.Context()
	org := newOrg(t, env, testutil.Org(orgName()).ClassMax(berthv1alpha1.ClassWorkspace, "2", "4Gi"))
	// Not restricted by the API server itself: berth's own checks are tested.
	ns := env.Namespace(t, org.Name)
	ws := testutil.Pod("ws").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
	env.Create(t, ws)

	privileged := corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
		Name: "debugger", Image: testutil.DefaultImage, SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
	}}
	err := updatePod(ctx, env, ws, "ephemeralcontainers", func(p *corev1.Pod) {
		p.Spec.EphemeralContainers = []corev1.EphemeralContainer{privileged}
	})
	require.Error(t, err, "a privileged debug container")
	assert.Contains(t, err.Error(), `violates Pod Security "restricted:latest"`)
	assert.Contains(t, err.Error(), "--profile=restricted")

	restricted := corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
		Name: "debugger", Image: testutil.DefaultImage, SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}}
	err = updatePod(ctx, env, ws, "ephemeralcontainers", func(p *corev1.Pod) {
		p.Spec.EphemeralContainers = []corev1.EphemeralContainer{restricted}
	})
	require.NoError(t, err, "kubectl debug --profile=restricted")

	// A Pod still pending: the API server refuses a resize on a node that
	// does not declare support for it, and the fake nodes declare none.
	pending := testutil.Pod("pending").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).SchedulerName("none").Obj()
	env.Create(t, pending)
	err = updatePod(ctx, env, pending, "resize", func(p *corev1.Pod) {
		p.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("8")
		p.Spec.Containers[0].Resources.Limits[corev1.ResourceCPU] = resource.MustParse("8")
	})
	require.Error(t, err, "a resize past the class max")
	assert.Contains(t, err.Error(), "workspace maximum of 2")

	err = updatePod(ctx, env, pending, "", func(p *corev1.Pod) {
		p.Spec.Tolerations = append(p.Spec.Tolerations, corev1.Toleration{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists})
	})
	require.Error(t, err, "a toleration added later")
	assert.Contains(t, err.Error(), `toleration {key: "nvidia.com/gpu"`)
}

// updatePod applies edit to the latest pod and writes it, through
// subresource unless it is "", again on a conflict (the scheduler and kwok
// write the Pod too).
func updatePod(ctx context.Context, env *framework.ClusterEnv, pod *corev1.Pod, subresource string, edit func(*corev1.Pod)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p := &corev1.Pod{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), p); err != nil {
			return err
		}
		edit(p)
		if subresource == "" {
			return env.Client.Update(ctx, p)
		}
		return env.Client.SubResource(subresource).Update(ctx, p)
	})
}

// A build's GPUs count against spec.maxGPUs, and devices asked through
// resource claims, which berth cannot count, are refused.
func TestBuildGPUsAreChargedAndClaimsRefused(t *testing.T) {
	env := setup(t)
	ctx := t.Context()
	org := newOrg(t, env, testutil.Org(orgName()).MaxGPUs(1))
	ns := orgNamespace(t, env, org.Name)
	env.Create(t, testutil.Job("gpu-build").Namespace(ns).Class(berthv1alpha1.ClassBuild).Resource(gpu, "1").Obj())
	framework.Eventually(t, time.Minute, "the build's Pod", func(ctx context.Context) (bool, error) {
		var pods corev1.PodList
		err := env.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"job-name": "gpu-build"})
		return len(pods.Items) > 0, err
	})
	err := env.Client.Create(ctx, testutil.Pod("vllm").Namespace(ns).Class(berthv1alpha1.ClassInference).Resource(gpu, "1").Obj())
	require.Error(t, err, "the build holds the org's only GPU")
	assert.True(t, apierrors.IsForbidden(err), "%v", err)
	assert.Contains(t, err.Error(), "spec.maxGPUs")

	claim := testutil.Pod("claim").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
	claim.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "gpu", ResourceClaimTemplateName: ptr.To("a100")}}
	claim.Spec.Containers[0].Resources.Claims = []corev1.ResourceClaim{{Name: "gpu"}}
	err = env.Client.Create(ctx, claim)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "resource claims")
}

// A second create of a running Pod's name, which the API server refuses,
// neither shrinks the running Pod's charge nor takes a slot.
func TestANameCollisionCannotShrinkACharge(t *testing.T) {
	env := setup(t)
	ctx := t.Context()
	org := newOrg(t, env, testutil.Org(orgName()).MaxGPUs(4))
	ns := orgNamespace(t, env, org.Name)
	env.Create(t, testutil.Pod("vllm").Namespace(ns).Class(berthv1alpha1.ClassInference).Resource(gpu, "4").Obj())
	for i := range 3 {
		err := env.Client.Create(ctx, testutil.Pod("vllm").Namespace(ns).Class(berthv1alpha1.ClassInference).Resource(gpu, "1").Obj())
		require.Error(t, err, "collision %d", i)
		assert.True(t, apierrors.IsAlreadyExists(err), "%v", err)
	}
	err := env.Client.Create(ctx, testutil.Pod("other").Namespace(ns).Class(berthv1alpha1.ClassInference).Resource(gpu, "1").Obj())
	require.Error(t, err, "the running Pod still holds all 4 GPUs")
	assert.Contains(t, err.Error(), "spec.maxGPUs")
	n, err := ledgerEntries(ctx, env, org.Name)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "ledger entries")
}

// A berth build is queued, and cannot change while it waits: not its pod
// template, not how many Pods it runs. A Job whose template alone says
// build, and a bare build Pod, get no build Pod at all.
func TestEveryBuildIsQueuedAndFixed(t *testing.T) {
	env := setup(t)
	ctx := t.Context()
	org := newOrg(t, env, testutil.Org(orgName()).MaxConcurrentBuilds(0))
	ns := orgNamespace(t, env, org.Name)
	job := testutil.Job("waiting").Namespace(ns).Class(berthv1alpha1.ClassBuild).Obj()
	env.Create(t, job)
	require.True(t, ptr.Deref(job.Spec.Suspend, false))
	dev := developer(t, env, ns)
	edits := map[string]func(*batchv1.Job){
		"tolerate every taint": func(j *batchv1.Job) {
			j.Spec.Template.Spec.Tolerations = append(j.Spec.Template.Spec.Tolerations, corev1.Toleration{Operator: corev1.TolerationOpExists})
		},
		"more CPU": func(j *batchv1.Job) {
			j.Spec.Template.Spec.Containers[0].Resources.Limits[corev1.ResourceCPU] = resource.MustParse("64")
		},
		"another class on the template": func(j *batchv1.Job) {
			j.Spec.Template.Labels[berthv1alpha1.LabelClass] = string(berthv1alpha1.ClassInference)
		},
		"affinity to the GPU nodes": func(j *batchv1.Job) { j.Spec.Template.Spec.Affinity = nil },
		"more Pods":                 func(j *batchv1.Job) { j.Spec.Parallelism = ptr.To[int32](20) },
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			got := &batchv1.Job{}
			require.NoError(t, dev.Get(ctx, client.ObjectKeyFromObject(job), got))
			patch := client.MergeFrom(got.DeepCopy())
			edit(got)
			err := dev.Patch(ctx, got, patch)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "a build cannot change once berth admitted it")
		})
	}

	plain := env.Namespace(t, org.Name)
	// A label of its own, so that the API server does not default the Job's
	// labels from its template's.
	sneaky := testutil.Job("sneaky").Namespace(plain).Label("team", "blue").Obj()
	sneaky.Spec.Template.Labels = map[string]string{berthv1alpha1.LabelClass: string(berthv1alpha1.ClassBuild)}
	env.Create(t, sneaky)
	framework.Eventually(t, time.Minute, "the Job controller to be refused its Pod", func(ctx context.Context) (bool, error) {
		var events corev1.EventList
		err := env.Client.List(ctx, &events, client.InNamespace(plain))
		for _, e := range events.Items {
			if e.InvolvedObject.Name == "sneaky" && e.Reason == "FailedCreate" {
				return strings.Contains(e.Message, "label the Job itself"), err
			}
		}
		return false, err
	})
	var pods corev1.PodList
	require.NoError(t, env.Client.List(ctx, &pods, client.InNamespace(plain)))
	assert.Empty(t, pods.Items, "a Job labelled a build only in its template runs no Pod")

	err := env.Client.Create(ctx, testutil.Pod("bare").Namespace(ns).Class(berthv1alpha1.ClassBuild).Obj())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "submit a Job labelled berth.dev/class=build instead of a bare Pod")

	// A Pod of one's own that names the queued build as its owner.
	forged := testutil.Pod("forged").Namespace(ns).Class(berthv1alpha1.ClassBuild).Obj()
	forged.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID, Controller: ptr.To(true)}}
	err = dev.Create(ctx, forged)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is queued for a build slot")
}

// A Pod cannot name its node or tolerate the taints that keep other work
// off berth's node pools.
func TestPlacementIsBerths(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()))
	ns := orgNamespace(t, env, org.Name)
	tests := map[string]struct {
		edit func(*corev1.Pod)
		want string
	}{
		"a node of its choice": {func(p *corev1.Pod) { p.Spec.NodeName = "gpu-0" }, "remove spec.nodeName"},
		"tolerate every taint": {func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
		}, "spec.tolerations[0]"},
		"tolerate the GPU taint": {func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
		}, `toleration {key: "nvidia.com/gpu"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pod := testutil.Pod("p-" + rand.String(4)).Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
			tc.edit(pod)
			err := env.Client.Create(t.Context(), pod)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// A class max with no default still bounds every container, Pod-level
// resources included, and hugepages count as memory.
func TestCapsHaveNoGaps(t *testing.T) {
	env := setup(t)
	ctx := t.Context()
	org := newOrg(t, env, testutil.Org(orgName()).ClassMax(berthv1alpha1.ClassWorkspace, "2", "4Gi"))
	// Not restricted by the API server itself: berth's own checks are tested.
	ns := env.Namespace(t, org.Name)
	ws := testutil.Pod("ws").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
	env.Create(t, ws)
	limits := ws.Spec.Containers[0].Resources.Limits
	assert.Equal(t, "2", ptr.To(limits[corev1.ResourceCPU]).String())
	assert.Equal(t, "4Gi", ptr.To(limits[corev1.ResourceMemory]).String())

	podLevel := testutil.Pod("pod-level").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
	podLevel.Spec.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("16")}}
	err := env.Client.Create(ctx, podLevel)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the Pod asks for 16 cpu")

	huge := testutil.Pod("huge").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Resource("hugepages-2Mi", "64Gi").Resource(corev1.ResourceMemory, "1Gi").Obj()
	err = env.Client.Create(ctx, huge)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "64Gi hugepages-2Mi")
}

// The org label of berth's metrics is the namespace's Organization, never
// a value a user wrote.
func TestMetricsNameOnlyRealOrgs(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()))
	ns := orgNamespace(t, env, org.Name)
	made := "made-up-" + rand.String(6)
	pod := testutil.Pod("ws").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
	env.Create(t, pod)
	err := relabel(t.Context(), env, pod, berthv1alpha1.LabelOrg, made)
	require.Error(t, err)
	n, err := manager.MetricValue("berth_webhook_admissions_total", `org="`+made+`"`)
	require.NoError(t, err)
	assert.Zero(t, n, "series labelled with the user's value")
	n, err = manager.MetricValue("berth_webhook_admissions_total", `org="`+org.Name+`"`, `result="denied"`)
	require.NoError(t, err)
	assert.Positive(t, n, "the denial counted under the namespace's org")
}

// While berth-manager cannot be reached, the updates berth does not decide
// on go through: the garbage collector removing a finalizer, the owner's
// own labels. Those berth decides on fail closed.
func TestUpdatesBerthDoesNotDecideNeverWaitOnIt(t *testing.T) {
	env := setup(t)
	ctx := t.Context()
	org := newOrg(t, env, testutil.Org(orgName()))
	ns := orgNamespace(t, env, org.Name)
	const finalizer = "test.berth.dev/hold"
	job := testutil.Job("build").Namespace(ns).Class(berthv1alpha1.ClassBuild).Obj()
	job.Finalizers = []string{finalizer}
	env.Create(t, job)
	pod := testutil.Pod("ws").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
	pod.Finalizers = []string{finalizer}
	env.Create(t, pod)

	// berth's configurations, for this namespace only, at an address where
	// nothing listens: berth-manager as if it were down.
	_, val := webhooks.Configurations(webhooks.Config{Namespace: "berth-system"}, webhooks.Endpoint{URL: fmt.Sprintf("https://127.0.0.1:%d", framework.FreePort(t))})
	val.Name = "dead-" + ns
	for i := range val.Webhooks {
		val.Webhooks[i].Name = "dead-" + val.Webhooks[i].Name
		val.Webhooks[i].NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}
	}
	env.Create(t, val)
	framework.Eventually(t, 30*time.Second, "the dead webhook in use", func(ctx context.Context) (bool, error) {
		err := relabel(ctx, env, pod.DeepCopy(), berthv1alpha1.LabelOrg, "x")
		return err != nil && strings.Contains(err.Error(), "dead-pods.validate.berth.dev"), nil
	})

	for _, obj := range []client.Object{job, pod} {
		require.NoError(t, env.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj))
		require.NoError(t, relabel(ctx, env, obj, "team", "blue"), "the owner's own label on %T", obj)
		patch := client.MergeFrom(obj.DeepCopyObject().(client.Object))
		obj.SetFinalizers(nil)
		require.NoError(t, env.Client.Patch(ctx, obj, patch), "finalizer removal on %T", obj)
	}
	unsuspend := client.MergeFrom(job.DeepCopy())
	job.Spec.Suspend = ptr.To(!ptr.Deref(job.Spec.Suspend, false))
	err := env.Client.Patch(ctx, job, unsuspend)
	require.Error(t, err, "an update berth decides on fails closed")
	assert.Contains(t, err.Error(), "dead-jobs.validate.berth.dev")
}

// A create the API server refuses after berth charged it (here, the
// namespace's own ResourceQuota) gives its slot back within Grace.
func TestASlotRefusedLaterIsSoonReleased(t *testing.T) {
	env := setup(t)
	ctx := t.Context()
	org := newOrg(t, env, testutil.Org(orgName()).MaxWorkspaces(5))
	ns := orgNamespace(t, env, org.Name)
	env.Create(t, &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "one-pod"},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("1")}},
	})
	framework.Eventually(t, 30*time.Second, "the ResourceQuota counted", func(ctx context.Context) (bool, error) {
		rq := &corev1.ResourceQuota{}
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "one-pod"}, rq)
		_, ok := rq.Status.Hard[corev1.ResourcePods]
		return ok, err
	})
	env.Create(t, testutil.Pod("ws-a").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj())
	err := env.Client.Create(ctx, testutil.Pod("ws-b").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "exceeded quota")
	framework.Eventually(t, 25*time.Second, "the refused Pod's slot given back", func(ctx context.Context) (bool, error) {
		n, err := ledgerEntries(ctx, env, org.Name)
		return n == 1, err
	})
}
