package webhooks_test

import (
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
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
			name: "privileged",
			edit: containerSC(corev1.SecurityContext{Privileged: ptr.To(true)}),
			want: []wantError{{field: "spec.containers[0].securityContext.privileged", typ: field.ErrorTypeForbidden,
				contains: []string{`container "main"`, "privileged", "remove privileged: true"}}},
		},
		{
			name: "hostNetwork",
			edit: func(p *corev1.Pod) { p.Spec.HostNetwork = true },
			want: []wantError{{field: "spec.hostNetwork", typ: field.ErrorTypeForbidden, contains: []string{"host networking", "remove hostNetwork"}}},
		},
		{
			name: "hostPID",
			edit: func(p *corev1.Pod) { p.Spec.HostPID = true },
			want: []wantError{{field: "spec.hostPID", typ: field.ErrorTypeForbidden, contains: []string{"process namespace", "remove hostPID"}}},
		},
		{
			name: "hostIPC",
			edit: func(p *corev1.Pod) { p.Spec.HostIPC = true },
			want: []wantError{{field: "spec.hostIPC", typ: field.ErrorTypeForbidden, contains: []string{"IPC namespace", "remove hostIPC"}}},
		},
		{
			name: "hostPath",
			edit: func(p *corev1.Pod) {
				p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "docker", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/run/docker.sock"}}})
			},
			want: []wantError{{field: "spec.volumes[0].hostPath", typ: field.ErrorTypeForbidden,
				contains: []string{`"docker"`, "/var/run/docker.sock", "use an emptyDir or a PersistentVolumeClaim"}}},
		},
		{
			name:  "hostPath in a build",
			class: build,
			edit: func(p *corev1.Pod) {
				p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "docker", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/run/docker.sock"}}})
			},
			want: []wantError{{field: "spec.volumes[0].hostPath", typ: field.ErrorTypeForbidden, contains: []string{"/var/run/docker.sock"}}},
		},
		{
			name: "runAsUser 0 on the Pod",
			edit: func(p *corev1.Pod) { p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](0)} },
			want: []wantError{{field: "spec.securityContext.runAsUser", typ: field.ErrorTypeInvalid,
				contains: []string{"Invalid value: 0", "root", "non-zero user id such as 1000"}}},
		},
		{
			name: "runAsUser 0 on a container",
			edit: containerSC(corev1.SecurityContext{RunAsUser: ptr.To[int64](0)}),
			want: []wantError{{field: "spec.containers[0].securityContext.runAsUser", typ: field.ErrorTypeInvalid,
				contains: []string{"Invalid value: 0", `container "main"`, "non-zero user id such as 1000"}}},
		},
		{
			name: "runAsUser 0 on an init container",
			edit: func(p *corev1.Pod) {
				p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: testutil.DefaultImage, SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](0)}}}
			},
			want: []wantError{{field: "spec.initContainers[0].securityContext.runAsUser", typ: field.ErrorTypeInvalid,
				contains: []string{"Invalid value: 0", `container "init"`, "remove runAsUser"}}},
		},
		{
			name: "runAsNonRoot false on the Pod",
			edit: func(p *corev1.Pod) { p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(false)} },
			want: []wantError{{field: "spec.securityContext.runAsNonRoot", typ: field.ErrorTypeInvalid,
				contains: []string{"Invalid value: false", "remove runAsNonRoot: false"}}},
		},
		{
			name: "runAsNonRoot false on a container",
			edit: containerSC(corev1.SecurityContext{RunAsNonRoot: ptr.To(false)}),
			want: []wantError{{field: "spec.containers[0].securityContext.runAsNonRoot", typ: field.ErrorTypeInvalid,
				contains: []string{"Invalid value: false", `container "main"`, "remove runAsNonRoot: false"}}},
		},
		{
			name: "allowPrivilegeEscalation true",
			edit: containerSC(corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(true)}),
			want: []wantError{{field: "spec.containers[0].securityContext.allowPrivilegeEscalation", typ: field.ErrorTypeInvalid,
				contains: []string{"Invalid value: true", `container "main"`, "remove allowPrivilegeEscalation: true"}}},
		},
		{
			name: "capability SYS_ADMIN, NET_BIND_SERVICE allowed",
			edit: containerSC(corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE", "SYS_ADMIN"}}}),
			want: []wantError{{field: "spec.containers[0].securityContext.capabilities.add[1]", typ: field.ErrorTypeForbidden,
				contains: []string{"SYS_ADMIN", "only NET_BIND_SERVICE may be added"}}},
		},
		{
			name: "hostPort",
			edit: func(p *corev1.Pod) {
				p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080}, {ContainerPort: 9090, HostPort: 9090}}
			},
			want: []wantError{{field: "spec.containers[0].ports[1].hostPort", typ: field.ErrorTypeForbidden,
				contains: []string{"9090", "use a Service"}}},
		},
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
				p.Spec.HostNetwork = true
				p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
				p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 80}}
			},
			want: []wantError{
				{field: "spec.hostNetwork", typ: field.ErrorTypeForbidden},
				{field: "spec.containers[0].securityContext.privileged", typ: field.ErrorTypeForbidden},
				{field: "spec.containers[0].ports[0].hostPort", typ: field.ErrorTypeForbidden},
			},
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
			assertErrors(t, tt.want, webhooks.ValidatePod(&got.Spec, tgt, field.NewPath("spec")))
		})
	}
}

func TestValidatePodPath(t *testing.T) {
	pod := testutil.Pod("b").Obj()
	pod.Spec.HostPID = true
	tgt := target(t, build, testOrg().Obj())
	got := mutate(t, pod, tgt)
	errs := webhooks.ValidatePod(&got.Spec, tgt, field.NewPath("spec", "template", "spec"))
	assertErrors(t, []wantError{{field: "spec.template.spec.hostPID", typ: field.ErrorTypeForbidden}}, errs)
}

func TestValidatePodNegativeBeforeMax(t *testing.T) {
	// A negative value is reported once, as negative, not also as above a
	// maximum.
	tgt := target(t, workspace, testOrg().Obj())
	spec := testutil.Pod("w").Obj().Spec
	spec.Containers[0].Resources.Limits = corev1.ResourceList{mem: resource.MustParse("-1Gi")}
	assertErrors(t, []wantError{{field: "spec.containers[0].resources.limits[memory]", typ: field.ErrorTypeInvalid, contains: []string{`"-1Gi"`, "negative"}}},
		webhooks.ValidatePod(&spec, tgt, field.NewPath("spec")))
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
			assert.Empty(t, webhooks.ValidatePod(&got.Spec, tgt, field.NewPath("spec")))
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
