package admission

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/quota"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// newOrg creates an Organization for one test.
func newOrg(t *testing.T, env *framework.ClusterEnv, b *testutil.OrgBuilder) *berthv1alpha1.Organization {
	org := b.Obj()
	env.Create(t, org)
	return org
}

func orgName() string { return "org-" + rand.String(6) }

func TestPodSecurityRestrictedAdmitsBerthPods(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()))
	ns := env.Namespace(t, org.Name)
	// Pod Security "restricted", enforced by the API server itself.
	nsObj := &corev1.Namespace{}
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Name: ns}, nsObj))
	nsObj.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	require.NoError(t, env.Client.Update(t.Context(), nsObj))

	plain := testutil.Pod("plain").Namespace(ns).Obj()
	err := env.Client.Create(t.Context(), plain)
	require.Error(t, err, "without berth, a Pod with no security context breaks restricted")
	assert.Contains(t, err.Error(), `violates PodSecurity "restricted:latest"`)

	for _, class := range []berthv1alpha1.Class{berthv1alpha1.ClassWorkspace, berthv1alpha1.ClassBuild} {
		pod := testutil.Pod("with-berth-" + string(class)).Namespace(ns).Class(class).User("ana").Obj()
		require.NoError(t, env.Client.Create(t.Context(), pod), "berth hardens a %s Pod so restricted admits it", class)
		got := &corev1.Pod{}
		require.NoError(t, env.Client.Get(t.Context(), client.ObjectKeyFromObject(pod), got))
		assert.Equal(t, org.Name, got.Labels[berthv1alpha1.LabelOrg])
		assert.Equal(t, ptr.To(true), got.Spec.SecurityContext.RunAsNonRoot)
		assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, got.Spec.SecurityContext.SeccompProfile.Type)
		assert.Equal(t, []corev1.Capability{"ALL"}, got.Spec.Containers[0].SecurityContext.Capabilities.Drop)
	}
}

func TestTenantComesFromTheNamespace(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()))
	ns := env.Namespace(t, org.Name)

	patched := podMutations(t, "patched")
	pod := testutil.Pod("ws").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Label(berthv1alpha1.LabelOrg, "someone-else").Obj()
	env.Create(t, pod)
	assert.Equal(t, org.Name, pod.Labels[berthv1alpha1.LabelOrg], "the user's org label is overwritten")
	assert.Equal(t, patched+1, podMutations(t, "patched"), "a bare labelled Pod is patched")

	unlabelled := env.Namespace(t, "")
	err := env.Client.Create(t.Context(), testutil.Pod("ws").Namespace(unlabelled).Class(berthv1alpha1.ClassWorkspace).Obj())
	require.Error(t, err)
	assert.True(t, apierrors.IsInvalid(err), "%v", err)
	assert.Contains(t, err.Error(), "has no berth.dev/org label")
	assert.Contains(t, err.Error(), "kubectl label namespace "+unlabelled+" berth.dev/org=<org>")

	orphan := env.Namespace(t, "no-such-org")
	err = env.Client.Create(t.Context(), testutil.Pod("ws").Namespace(orphan).Class(berthv1alpha1.ClassWorkspace).Obj())
	require.Error(t, err)
	assert.Contains(t, err.Error(), `Organization "no-such-org" (label berth.dev/org), which does not exist`)

	err = env.Client.Create(t.Context(), testutil.Pod("ws").Namespace(ns).Label(berthv1alpha1.LabelClass, "batch").Obj())
	require.Error(t, err)
	assert.Contains(t, err.Error(), `metadata.labels[berth.dev/class]: Unsupported value: "batch"`)

	plain := testutil.Pod("plain").Namespace(unlabelled).Obj()
	env.Create(t, plain)
	assert.Empty(t, plain.Spec.SecurityContext, "objects without berth.dev/class are never touched")
}

func TestSystemNamespacesAreNeverTouched(t *testing.T) {
	env := setup(t)
	for _, ns := range []string{"kube-system", "berth-system"} {
		t.Run(ns, func(t *testing.T) {
			// The namespace has no berth.dev/org label: were berth called, it
			// would deny the Pod.
			pod := testutil.Pod("labelled-" + rand.String(5)).Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
			env.Create(t, pod)
			t.Cleanup(func() { _ = env.Client.Delete(context.WithoutCancel(t.Context()), pod, client.GracePeriodSeconds(0)) })
			assert.Empty(t, pod.Labels[berthv1alpha1.LabelOrg])
			assert.Empty(t, pod.Spec.SecurityContext, "no hardening")
			assert.Empty(t, pod.Spec.Containers[0].Resources, "no class defaults")
			assert.Nil(t, pod.Spec.Affinity, "no placement")
		})
	}
}

func TestResourcesAreDefaultedAndCapped(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()).
		ClassDefault(berthv1alpha1.ClassWorkspace, "1", "2Gi").ClassMax(berthv1alpha1.ClassWorkspace, "2", "4Gi"))
	ns := env.Namespace(t, org.Name)

	pod := testutil.Pod("defaults").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
	env.Create(t, pod)
	res := pod.Spec.Containers[0].Resources
	assert.Equal(t, "1", ptr.To(res.Requests[corev1.ResourceCPU]).String())
	assert.Equal(t, "2Gi", ptr.To(res.Limits[corev1.ResourceMemory]).String())

	big := testutil.Pod("big").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Resource(corev1.ResourceMemory, "8Gi").Obj()
	err := env.Client.Create(t.Context(), big)
	require.Error(t, err)
	assert.True(t, apierrors.IsInvalid(err), "%v", err)
	for _, want := range []string{"spec.containers[0].resources", "memory", `"8Gi"`, "maximum of 4Gi", "ask for at most 4Gi"} {
		assert.Contains(t, err.Error(), want)
	}

	absurd := testutil.Pod("absurd").Namespace(ns).Class(berthv1alpha1.ClassBuild).Resource(corev1.ResourceCPU, "100k").Obj()
	err = env.Client.Create(t.Context(), absurd)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "more than any container needs")

	inference := testutil.Pod("vllm").Namespace(ns).Class(berthv1alpha1.ClassInference).Obj()
	err = env.Client.Create(t.Context(), inference)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "inference Pods must request nvidia.com/gpu")
}

func TestUnsafePodsAreDenied(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()))
	ns := env.Namespace(t, org.Name)
	tests := map[string]struct {
		mutate func(*corev1.Pod)
		want   string
	}{
		"privileged": {func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
		}, "spec.containers[0].securityContext.privileged: Forbidden"},
		"host network": {func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "spec.hostNetwork: Forbidden"},
		"host path": {func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		}, "spec.volumes[0].hostPath: Forbidden"},
		"root": {func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](0)}
		}, "spec.securityContext.runAsUser: Invalid value: 0: running as root is not allowed"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pod := testutil.Pod("unsafe-" + rand.String(4)).Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
			tc.mutate(pod)
			err := env.Client.Create(t.Context(), pod)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestWorkspaceQuotaAndStatus(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()).MaxWorkspaces(2))
	ns := env.Namespace(t, org.Name)

	a := testutil.Pod("ws-a").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
	b := testutil.Pod("ws-b").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
	env.Create(t, a)
	env.Create(t, b)

	// A dry run is decided but charges nothing.
	dry := testutil.Pod("ws-dry").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
	err := env.Client.Create(t.Context(), dry, client.DryRunAll)
	require.Error(t, err, "the quota is full, dry run or not")

	c := testutil.Pod("ws-c").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
	err = env.Client.Create(t.Context(), c)
	require.Error(t, err)
	assert.True(t, apierrors.IsForbidden(err), "%v", err)
	assert.Contains(t, err.Error(), "already runs 2 of its 2 workspaces (spec.maxWorkspaces)")

	framework.Eventually(t, 30*time.Second, "status.workspaces = 2", func(ctx context.Context) (bool, error) {
		got := &berthv1alpha1.Organization{}
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(org), got)
		return got.Status.Workspaces == 2, err
	})

	// Deleting a workspace frees its slot.
	require.NoError(t, env.Client.Delete(t.Context(), a, client.GracePeriodSeconds(0)))
	framework.Eventually(t, 60*time.Second, "a freed slot", func(ctx context.Context) (bool, error) {
		err := env.Client.Create(ctx, testutil.Pod("ws-c").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj())
		return err == nil, client.IgnoreAlreadyExists(ignoreForbidden(err))
	})
	framework.Eventually(t, 30*time.Second, "status.workspaces = 2 again", func(ctx context.Context) (bool, error) {
		got := &berthv1alpha1.Organization{}
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(org), got)
		return got.Status.Workspaces == 2, err
	})
}

func ignoreForbidden(err error) error {
	if apierrors.IsForbidden(err) {
		return nil
	}
	return err
}

// Far from its limit an org's workspaces are admitted in the mutating call,
// under berth-manager's quota hold: each carries a token berth chose, the
// API server does not call the validating webhook for it, its token is a
// ledger entry within a tick, the token cannot be changed, and deleting the
// Pod releases its entry.
func TestHeldWorkspacesTakeOneWebhookCall(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()).MaxWorkspaces(1000))
	ns := env.Namespace(t, org.Name)
	validations := func() float64 {
		n, err := manager.MetricValue("berth_webhook_duration_seconds_count", `kind="Pod"`, `phase="validate"`)
		require.NoError(t, err)
		return n
	}
	before := validations()
	var held []*corev1.Pod
	const creates = 12
	for i := range creates {
		// The first create takes the hold through the validating webhook;
		// the next ones are admitted under it.
		p := testutil.Pod(fmt.Sprintf("ws-%02d", i)).Namespace(ns).Class(berthv1alpha1.ClassWorkspace).
			Label(berthv1alpha1.LabelQuotaToken, "forged").Annotation(berthv1alpha1.AnnotationQuota, "no").Obj()
		env.Create(t, p)
		tok := p.Labels[berthv1alpha1.LabelQuotaToken]
		assert.NotEqual(t, "forged", tok, "a token the user wrote is replaced")
		if tok != "" {
			assert.NotContains(t, p.Annotations, berthv1alpha1.AnnotationQuota, "a held Pod is not sent to the validating webhook")
			held = append(held, p)
		} else {
			assert.Equal(t, berthv1alpha1.QuotaCharged, p.Annotations[berthv1alpha1.AnnotationQuota])
		}
	}
	require.GreaterOrEqual(t, len(held), creates-2, "workspaces admitted under the hold")
	assert.Equal(t, float64(creates-len(held)), validations()-before, "validating calls: only the Pods not held")

	ledger := func(ctx context.Context) (map[string]bool, error) {
		cm := &corev1.ConfigMap{}
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: "berth-system", Name: quota.Name(org.Name)}, cm)
		keys := map[string]bool{}
		for _, line := range strings.Split(cm.Data[quota.DataKey], "\n") {
			if k, _, ok := strings.Cut(line, " "); ok {
				keys[k] = true
			}
		}
		return keys, err
	}
	framework.Eventually(t, 30*time.Second, "every held token is a ledger entry", func(ctx context.Context) (bool, error) {
		keys, err := ledger(ctx)
		for _, p := range held {
			if !keys[quota.TokenKey(ns, p.Labels[berthv1alpha1.LabelQuotaToken])] {
				return false, err
			}
		}
		return len(keys) == creates, err
	})

	// The token ties the Pod to its entry: it cannot be changed or removed.
	for _, change := range []func(*corev1.Pod){
		func(p *corev1.Pod) {
			p.Labels[berthv1alpha1.LabelQuotaToken] = held[1].Labels[berthv1alpha1.LabelQuotaToken]
		},
		func(p *corev1.Pod) { delete(p.Labels, berthv1alpha1.LabelQuotaToken) },
	} {
		p := held[0].DeepCopy()
		change(p)
		err := env.Client.Patch(t.Context(), p, client.MergeFrom(held[0]))
		require.Error(t, err)
		assert.True(t, apierrors.IsInvalid(err), "%v", err)
		assert.Contains(t, err.Error(), "the quota token is set by berth at admission and cannot change")
	}

	gone := held[0]
	require.NoError(t, env.Client.Delete(t.Context(), gone, client.GracePeriodSeconds(0)))
	framework.Eventually(t, 30*time.Second, "the deleted Pod's token entry is released", func(ctx context.Context) (bool, error) {
		keys, err := ledger(ctx)
		return !keys[quota.TokenKey(ns, gone.Labels[berthv1alpha1.LabelQuotaToken])] && len(keys) == creates-1, err
	})
	framework.Eventually(t, 30*time.Second, "status counts the held workspaces", func(ctx context.Context) (bool, error) {
		got := &berthv1alpha1.Organization{}
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(org), got)
		return got.Status.Workspaces == creates-1, err
	})
}
