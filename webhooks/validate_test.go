package webhooks_test

import (
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/webhooks"
)

// wantError is one error ValidatePod must return: its field path and the
// words its message must hold (the value and the fix).
type wantError struct {
	field    string
	typ      field.ErrorType
	contains []string
}

// assertErrors checks that errs are exactly want, in any order.
func assertErrors(t *testing.T, want []wantError, errs field.ErrorList) {
	t.Helper()
	got := make([]string, 0, len(errs))
	for _, e := range errs {
		got = append(got, e.Field)
	}
	wantFields := make([]string, 0, len(want))
	for _, w := range want {
		wantFields = append(wantFields, w.field)
	}
	sort.Strings(got)
	sort.Strings(wantFields)
	require.Equal(t, wantFields, got, "fields of %v", errs)
	for _, w := range want {
		for _, e := range errs {
			if e.Field != w.field {
				continue
			}
			assert.Equal(t, w.typ, e.Type, "type of %s", e.Field)
			for _, s := range w.contains {
				assert.Contains(t, e.Error(), s, "message of %s", e.Field)
			}
		}
	}
}

// containerSC sets the first container's security context.
func containerSC(sc corev1.SecurityContext) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Spec.Containers[0].SecurityContext = &sc }
}

func TestValidatePodDenials(t *testing.T) {
	tests := []struct {
		name  string
		class berthv1alpha1.Class
		org   *berthv1alpha1.Organization
		pod   *corev1.Pod
		// edit changes the Pod as a user would, before it is mutated.
		edit func(*corev1.Pod)
		want []wantError
	}{
		{
			name: "above the class max",
			pod:  testutil.Pod("w").Container(corev1.Container{Name: "ide", Image: testutil.DefaultImage}).Obj(),
			edit: func(p *corev1.Pod) {
				p.Spec.Containers[1].Resources.Requests = corev1.ResourceList{cpu: resource.MustParse("6")}
			},
			want: []wantError{
				{field: "spec.containers[1].resources.requests[cpu]", typ: field.ErrorTypeInvalid,
					contains: []string{`Invalid value: "6"`, `container "ide"`, "asks for 6 cpu", "workspace maximum of 4", `Organization "acme"`, "ask for at most 4", "spec.classes.workspace.max"}},
			},
		},
		{
			name:  "above the class max, two resources",
			class: inference,
			edit: func(p *corev1.Pod) {
				p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{gpu: resource.MustParse("8"), mem: resource.MustParse("128Gi")}
			},
			want: []wantError{
				{field: "spec.containers[0].resources.limits[nvidia.com/gpu]", typ: field.ErrorTypeInvalid,
					contains: []string{`Invalid value: "8"`, `container "main"`, "8 nvidia.com/gpu", "inference maximum of 4", "spec.classes.inference.max"}},
				{field: "spec.containers[0].resources.limits[memory]", typ: field.ErrorTypeInvalid,
					contains: []string{`Invalid value: "128Gi"`, "128Gi memory", "inference maximum of 64Gi", "ask for at most 64Gi"}},
			},
		},
		{
			name: "above the class max in an init container",
			edit: func(p *corev1.Pod) {
				p.Spec.InitContainers = []corev1.Container{{Name: "warm", Image: testutil.DefaultImage, Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{mem: resource.MustParse("10Gi")}, Limits: corev1.ResourceList{mem: resource.MustParse("10Gi")},
				}}}
			},
			want: []wantError{
				{field: "spec.initContainers[0].resources.requests[memory]", typ: field.ErrorTypeInvalid, contains: []string{`container "warm"`, "10Gi", "8Gi"}},
				{field: "spec.initContainers[0].resources.limits[memory]", typ: field.ErrorTypeInvalid, contains: []string{`container "warm"`, "10Gi", "8Gi"}},
			},
		},
		{
			name: "above the absurd ceiling",
			pod:  testutil.Pod("w").Resource(mem, "100Ti").Obj(),
			want: []wantError{
				{field: "spec.containers[0].resources.requests[memory]", typ: field.ErrorTypeInvalid,
					contains: []string{`Invalid value: "100Ti"`, "above 4Ti", "check the unit (for example 2Gi, not 2000Gi)"}},
				{field: "spec.containers[0].resources.limits[memory]", typ: field.ErrorTypeInvalid,
					contains: []string{`Invalid value: "100Ti"`, "above 4Ti", "check the unit"}},
			},
		},
		{
			name: "above the absurd ceiling without a class max",
			org:  testutil.Org("acme").Obj(),
			pod:  testutil.Pod("w").Resource(cpu, "600").Obj(),
			want: []wantError{
				{field: "spec.containers[0].resources.requests[cpu]", typ: field.ErrorTypeInvalid, contains: []string{`"600"`, "above 512", "check the unit"}},
				{field: "spec.containers[0].resources.limits[cpu]", typ: field.ErrorTypeInvalid, contains: []string{`"600"`, "above 512", "check the unit"}},
			},
		},
		{
			// The message names the value but, unlike every other denial,
			// not the fix (see the report).
			name: "negative quantity",
			pod:  testutil.Pod("w").Request(cpu, "-1").Obj(),
			want: []wantError{{field: "spec.containers[0].resources.requests[cpu]", typ: field.ErrorTypeInvalid,
				contains: []string{`Invalid value: "-1"`, "must not be negative"}}},
		},
		{
			name:  "inference without GPU",
			class: inference,
			org:   testutil.Org("acme").Obj(),
			want: []wantError{{field: "spec.containers[0].resources.limits[nvidia.com/gpu]", typ: field.ErrorTypeRequired,
				contains: []string{"must request nvidia.com/gpu", "add resources.limits: {nvidia.com/gpu: 1}"}}},
		},
		{
			name: "every violation is reported, not only the first",
			edit: func(p *corev1.Pod) {
				p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{cpu: resource.MustParse("6")}
				p.Spec.HostNetwork = true
				p.Spec.NodeName = "gpu-0"
			},
			want: []wantError{
				{field: "spec.containers[0].resources.requests[cpu]", typ: field.ErrorTypeInvalid},
				{field: "spec", typ: field.ErrorTypeForbidden, contains: []string{"host namespaces (hostNetwork=true)"}},
				{field: "spec.nodeName", typ: field.ErrorTypeForbidden, contains: []string{"gpu-0", "remove spec.nodeName"}},
			},
		},
		{
			name:  "max without a default still bounds the container",
			org:   testutil.Org("acme").ClassMax(workspace, "2", "4Gi").Obj(),
			class: workspace,
		},
		{
			name: "Pod-level resources above the class max",
			edit: func(p *corev1.Pod) {
				p.Spec.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{cpu: resource.MustParse("64")}}
			},
			want: []wantError{{field: "spec.resources.limits[cpu]", typ: field.ErrorTypeInvalid,
				contains: []string{"the Pod asks for 64 cpu", "workspace maximum of 4"}}},
		},
		{
			name: "hugepages count as memory",
			edit: func(p *corev1.Pod) {
				p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{"hugepages-2Mi": resource.MustParse("64Gi"), mem: resource.MustParse("1Gi")}
				p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{"hugepages-2Mi": resource.MustParse("64Gi")}
			},
			want: []wantError{
				{field: "spec.containers[0].resources.limits[hugepages-2Mi]", typ: field.ErrorTypeInvalid, contains: []string{"64Gi hugepages-2Mi", "maximum of 8Gi"}},
				{field: "spec.containers[0].resources.requests[hugepages-2Mi]", typ: field.ErrorTypeInvalid, contains: []string{"64Gi hugepages-2Mi"}},
			},
		},
		{
			name: "devices through DRA claims",
			edit: func(p *corev1.Pod) {
				p.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "gpu", ResourceClaimTemplateName: ptr.To("a100")}}
				p.Spec.Containers[0].Resources.Claims = []corev1.ResourceClaim{{Name: "gpu"}}
			},
			want: []wantError{{field: "spec.resourceClaims", typ: field.ErrorTypeForbidden, contains: []string{"resource claims", "nvidia.com/gpu"}}},
		},
		{
			name: "tolerate every taint",
			edit: func(p *corev1.Pod) {
				p.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
			},
			want: []wantError{{field: "spec.tolerations[0]", typ: field.ErrorTypeForbidden, contains: []string{"Exists", "remove it"}}},
		},
		{
			name: "a workspace tolerates the GPU taint",
			edit: func(p *corev1.Pod) {
				p.Spec.Tolerations = []corev1.Toleration{{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
			},
			want: []wantError{{field: "spec.tolerations[0]", typ: field.ErrorTypeForbidden, contains: []string{"nvidia.com/gpu", "workspace"}}},
		},
		{
			name: "a priority class of its own without berth's",
			edit: func(p *corev1.Pod) { p.Spec.PriorityClassName = "system-cluster-critical" },
			want: []wantError{{field: "spec.priorityClassName", typ: field.ErrorTypeForbidden, contains: []string{"system-cluster-critical", "remove spec.priorityClassName"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			class, org, pod := tt.class, tt.org, tt.pod
			if class == "" {
				class = workspace
			}
			if org == nil {
				org = testOrg().Obj()
			}
			if pod == nil {
				pod = testutil.Pod("p").Obj()
			}
			pod = pod.DeepCopy()
			if tt.edit != nil {
				tt.edit(pod)
			}
			tgt := target(t, class, org)
			got := mutate(t, pod, tgt)
			assertErrors(t, tt.want, webhooks.ValidatePod(&got.ObjectMeta, &got.Spec, tgt, field.NewPath("spec")))
			if len(tt.want) == 0 {
				for _, c := range got.Spec.Containers {
					assert.NotEmpty(t, c.Resources.Limits, "container %s has limits", c.Name)
				}
			}
		})
	}
}

// Every Pod berth admits passes the upstream Pod Security restricted
// evaluator: whatever the user sets that it refuses is denied after
// mutation, with the check's own words.
func TestValidatePodSecurity(t *testing.T) {
	unconfined := &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
	tests := []struct {
		name     string
		edit     func(*corev1.Pod)
		contains string
	}{
		{"privileged", containerSC(corev1.SecurityContext{Privileged: ptr.To(true)}), "privileged"},
		{"hostNetwork", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "hostNetwork=true"},
		{"hostPID", func(p *corev1.Pod) { p.Spec.HostPID = true }, "hostPID=true"},
		{"hostIPC", func(p *corev1.Pod) { p.Spec.HostIPC = true }, "hostIPC=true"},
		{"hostPath", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "docker", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/run/docker.sock"}}})
		}, `"docker"`},
		{"nfs volume", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "share", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "10.0.0.1", Path: "/"}}})
		}, "restricted volume types"},
		{"runAsUser 0 on the Pod", func(p *corev1.Pod) { p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](0)} }, "runAsUser=0"},
		{"runAsUser 0 on an init container", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: testutil.DefaultImage, SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](0)}}}
		}, `"init"`},
		{"runAsNonRoot false", containerSC(corev1.SecurityContext{RunAsNonRoot: ptr.To(false)}), "runAsNonRoot"},
		{"allowPrivilegeEscalation true", containerSC(corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(true)}), "allowPrivilegeEscalation"},
		{"capability SYS_ADMIN", containerSC(corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE", "SYS_ADMIN"}}}), "SYS_ADMIN"},
		{"hostPort", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 9090, HostPort: 9090}}
		}, "9090"},
		{"seccomp Unconfined on the Pod", func(p *corev1.Pod) { p.Spec.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: unconfined} }, "seccompProfile"},
		{"seccomp Unconfined on a container", containerSC(corev1.SecurityContext{SeccompProfile: unconfined}), "seccompProfile"},
		{"AppArmor Unconfined", containerSC(corev1.SecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}}), "AppArmor"},
		{"a SELinux type", containerSC(corev1.SecurityContext{SELinuxOptions: &corev1.SELinuxOptions{Type: "spc_t"}}), "seLinuxOptions"},
		{"procMount Unmasked", containerSC(corev1.SecurityContext{ProcMount: ptr.To(corev1.UnmaskedProcMount)}), "procMount"},
		{"an unsafe sysctl", func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: "kernel.msgmax", Value: "1"}}}
		}, "kernel.msgmax"},
		{"a probe on a node address", func(p *corev1.Pod) {
			p.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Host: "169.254.169.254", Port: intstr.FromInt32(80)}}}
		}, "169.254.169.254"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := testutil.Pod("p").Obj()
			tt.edit(pod)
			tgt := target(t, workspace, testOrg().Obj())
			got := mutate(t, pod, tgt)
			errs := webhooks.ValidatePod(&got.ObjectMeta, &got.Spec, tgt, field.NewPath("spec"))
			require.NotEmpty(t, errs)
			assert.Contains(t, errs.ToAggregate().Error(), tt.contains)
			assert.Contains(t, errs.ToAggregate().Error(), `Pod Security "restricted:latest"`)
		})
	}
}

func TestValidatePodNegativeBeforeMax(t *testing.T) {
	// A negative value is reported once, as negative, not also as above a
	// maximum.
	tgt := target(t, workspace, testOrg().Obj())
	pod := testutil.Pod("w").Obj()
	pod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{mem: resource.MustParse("-1Gi")}
	got := mutate(t, pod, tgt)
	assertErrors(t, []wantError{{field: "spec.containers[0].resources.limits[memory]", typ: field.ErrorTypeInvalid, contains: []string{`"-1Gi"`, "negative"}}},
		webhooks.ValidatePod(&got.ObjectMeta, &got.Spec, tgt, field.NewPath("spec")))
}

func TestValidatePodMutatedValid(t *testing.T) {
	tests := []struct {
		name  string
		class berthv1alpha1.Class
		org   *berthv1alpha1.Organization
		pod   *corev1.Pod
	}{
		{name: "workspace", class: workspace, org: testOrg().Obj(), pod: testutil.Pod("w").Class(workspace).Obj()},
		{name: "workspace at the max", class: workspace, org: testOrg().Obj(), pod: testutil.Pod("w").Class(workspace).Resource(cpu, "4").Resource(mem, "8Gi").Obj()},
		{name: "workspace request only", class: workspace, org: testOrg().Obj(), pod: testutil.Pod("w").Class(workspace).Request(cpu, "2").Obj()},
		{name: "workspace NET_BIND_SERVICE", class: workspace, org: testOrg().Obj(), pod: func() *corev1.Pod {
			p := testutil.Pod("w").Class(workspace).Obj()
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE"}}}
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80}}
			return p
		}()},
		{name: "build", class: build, org: testOrg().Obj(), pod: testutil.Pod("b").Class(build).InitContainer(corev1.Container{Name: "fetch", Image: testutil.DefaultImage}).Obj()},
		{name: "build with cache and scratch", class: build, org: testOrg().BuildCacheClaim("cache").BuildScratch("50Gi", "100Gi").Obj(), pod: testutil.Pod("b").Class(build).Obj()},
		{name: "inference", class: inference, org: testOrg().Obj(), pod: testutil.Pod("vllm").Class(inference).Obj()},
		{name: "inference with its own GPUs", class: inference, org: testOrg().Obj(), pod: testutil.Pod("vllm").Class(inference).Resource(gpu, "4").Obj()},
		{name: "empty org", class: workspace, org: testutil.Org("acme").Obj(), pod: testutil.Pod("w").Class(workspace).Obj()},
		{name: "empty org build", class: build, org: testutil.Org("acme").Obj(), pod: testutil.Pod("b").Class(build).Obj()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tgt := target(t, tt.class, tt.org)
			got := mutate(t, tt.pod, tgt)
			assert.Empty(t, webhooks.ValidatePod(&got.ObjectMeta, &got.Spec, tgt, field.NewPath("spec")))
		})
	}
}

func TestValidateClass(t *testing.T) {
	for _, c := range berthv1alpha1.Classes {
		t.Run(string(c), func(t *testing.T) {
			got, err := webhooks.ValidateClass(string(c), field.NewPath("metadata"))
			require.Nil(t, err)
			assert.Equal(t, c, got)
		})
	}
	for _, bad := range []string{"batch", "", "Build", " workspace"} {
		t.Run("unknown "+bad, func(t *testing.T) {
			got, err := webhooks.ValidateClass(bad, field.NewPath("metadata"))
			require.NotNil(t, err)
			assert.Empty(t, got)
			assert.Equal(t, "metadata.labels[berth.dev/class]", err.Field)
			assert.Equal(t, field.ErrorTypeNotSupported, err.Type)
			msg := err.Error()
			assert.Contains(t, msg, `"`+bad+`"`)
			for _, c := range berthv1alpha1.Classes {
				assert.Contains(t, msg, `"`+string(c)+`"`, "the message lists the supported classes")
			}
		})
	}
}
