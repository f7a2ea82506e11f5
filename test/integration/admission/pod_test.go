package admission

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
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
	ns := orgNamespace(t, env, org.Name)
	// Pod Security "restricted", enforced by the API server itself.
	nsObj := &corev1.Namespace{}
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Name: ns}, nsObj))
	nsObj.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	require.NoError(t, env.Client.Update(t.Context(), nsObj))

	plain := testutil.Pod("plain").Namespace(ns).Obj()
	err := env.Client.Create(t.Context(), plain)
	require.Error(t, err, "without berth, a Pod with no security context breaks restricted")
	assert.Contains(t, err.Error(), `violates PodSecurity "restricted:latest"`)

	for _, class := range []berthv1alpha1.Class{berthv1alpha1.ClassWorkspace, berthv1alpha1.ClassInference} {
		pod := testutil.Pod("with-berth-"+string(class)).Namespace(ns).Class(class).User("ana").Resource("nvidia.com/gpu", "1").Obj()
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
	ns := orgNamespace(t, env, org.Name)

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
	ns := orgNamespace(t, env, org.Name)

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
	ns := orgNamespace(t, env, org.Name)
	tests := map[string]struct {
		mutate func(*corev1.Pod)
		want   string
	}{
		"privileged": {func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
		}, `privileged (container "main" must not set securityContext.privileged=true)`},
		"host network": {func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "host namespaces (hostNetwork=true)"},
		"host path": {func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		}, `restricted volume types (volume "root" uses restricted volume type "hostPath")`},
		"root": {func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](0)}
		}, "runAsUser=0 (pod must not set runAsUser=0)"},
		"seccomp Unconfined": {func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}}
		}, "seccompProfile"},
		"AppArmor Unconfined": {func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}}
		}, "AppArmor"},
		"SELinux type": {func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{SELinuxOptions: &corev1.SELinuxOptions{Type: "spc_t"}}
		}, "seLinuxOptions"},
		"procMount Unmasked": {func(p *corev1.Pod) {
			p.Spec.HostUsers = ptr.To(false)
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{ProcMount: ptr.To(corev1.UnmaskedProcMount)}
		}, "procMount"},
		"nfs volume": {func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "share", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs.example", Path: "/"}}}}
		}, "restricted volume types"},
		"unsafe sysctl": {func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: "kernel.msgmax", Value: "65536"}}}
		}, "kernel.msgmax"},
		"probe on a node address": {func(p *corev1.Pod) {
			p.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Host: "169.254.169.254", Port: intstr.FromInt32(80)}}}
		}, "169.254.169.254"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pod := testutil.Pod("unsafe-" + rand.String(4)).Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
			tc.mutate(pod)
			err := env.Client.Create(t.Context(), pod)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), `violates Pod Security "restricted:latest"`)
		})
	}
}

func TestWorkspaceQuotaAndStatus(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()).MaxWorkspaces(2))
	ns := orgNamespace(t, env, org.Name)

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
