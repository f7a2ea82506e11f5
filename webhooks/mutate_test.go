package webhooks_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/diff"
	"k8s.io/utils/ptr"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/placement"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/webhooks"
)

const (
	workspace = berthv1alpha1.ClassWorkspace
	build     = berthv1alpha1.ClassBuild
	inference = berthv1alpha1.ClassInference

	gpu = placement.GPUResource
	cpu = corev1.ResourceCPU
	mem = corev1.ResourceMemory
	eph = corev1.ResourceEphemeralStorage
)

// The AKS preset's node requirements and tolerations, spelled out so the
// tests say what a Pod must end up with.
var (
	spotIn     = corev1.NodeSelectorRequirement{Key: "kubernetes.azure.com/scalesetpriority", Operator: corev1.NodeSelectorOpIn, Values: []string{"spot"}}
	spotNotIn  = corev1.NodeSelectorRequirement{Key: "kubernetes.azure.com/scalesetpriority", Operator: corev1.NodeSelectorOpNotIn, Values: []string{"spot"}}
	localSSD   = corev1.NodeSelectorRequirement{Key: "berth.dev/local-ssd", Operator: corev1.NodeSelectorOpIn, Values: []string{"true"}}
	gpuNode    = corev1.NodeSelectorRequirement{Key: "nvidia.com/gpu.present", Operator: corev1.NodeSelectorOpIn, Values: []string{"true"}}
	spotTol    = corev1.Toleration{Key: "kubernetes.azure.com/scalesetpriority", Operator: corev1.TolerationOpEqual, Value: "spot", Effect: corev1.TaintEffectNoSchedule}
	gpuTol     = corev1.Toleration{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}
	zoneA      = corev1.NodeSelectorRequirement{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"eastus-1"}}
	zoneB      = corev1.NodeSelectorRequirement{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"eastus-2"}}
	noSchedule = corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "ml", Effect: corev1.TaintEffectNoSchedule}
)

// testOrg is an org with defaults and caps for every class.
func testOrg() *testutil.OrgBuilder {
	return testutil.Org("acme").
		ClassDefault(workspace, "1", "2Gi").ClassMax(workspace, "4", "8Gi").
		ClassDefault(build, "2", "4Gi").ClassMax(build, "8", "16Gi").
		ClassDefault(inference, "4", "16Gi").ClassMax(inference, "16", "64Gi").
		ClassDefaultGPUs(inference, 1).ClassMaxGPUs(inference, 4)
}

// target is the Target of class in org, with the AKS keys and
// berth-scheduler.
func target(t testing.TB, class berthv1alpha1.Class, org *berthv1alpha1.Organization) webhooks.Target {
	t.Helper()
	keys, err := placement.Preset(placement.PresetAKS)
	require.NoError(t, err)
	return webhooks.Target{Class: class, Org: org, Config: webhooks.Config{SchedulerName: "berth-scheduler", Keys: keys}}
}

// mutate returns a mutated copy of pod, after checking that a second
// MutatePod changes nothing. Every MutatePod test goes through it, so every
// case checks idempotence.
func mutate(t *testing.T, pod *corev1.Pod, tgt webhooks.Target) *corev1.Pod {
	t.Helper()
	orgBefore := tgt.Org.DeepCopy()
	once := pod.DeepCopy()
	webhooks.MutatePod(&once.ObjectMeta, &once.Spec, tgt)
	twice := once.DeepCopy()
	webhooks.MutatePod(&twice.ObjectMeta, &twice.Spec, tgt)
	assert.True(t, equality.Semantic.DeepEqual(once, twice), "a second MutatePod changed the Pod:\n%s", diff.Diff(once, twice))
	assert.True(t, equality.Semantic.DeepEqual(orgBefore, tgt.Org), "MutatePod changed the Organization")
	return once
}

// quantities returns a resource list's values as strings, for readable
// assertions.
func quantities(l corev1.ResourceList) map[corev1.ResourceName]string {
	if l == nil {
		return nil
	}
	out := make(map[corev1.ResourceName]string, len(l))
	for k, v := range l {
		out[k] = v.String()
	}
	return out
}

func TestMutatePodOrgLabel(t *testing.T) {
	tests := []struct {
		name string
		pod  *corev1.Pod
	}{
		{name: "no labels", pod: testutil.Pod("w").Obj()},
		{name: "class label only", pod: testutil.Pod("w").Class(workspace).Obj()},
		{name: "user claims another org", pod: testutil.Pod("w").Class(workspace).Label(berthv1alpha1.LabelOrg, "evil").Obj()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mutate(t, tt.pod, target(t, workspace, testOrg().Obj()))
			assert.Equal(t, "acme", got.Labels[berthv1alpha1.LabelOrg])
			for k, v := range tt.pod.Labels {
				if k != berthv1alpha1.LabelOrg {
					assert.Equal(t, v, got.Labels[k], "label %s", k)
				}
			}
		})
	}
}

func TestMutatePodResourceDefaults(t *testing.T) {
	type resources struct {
		requests, limits map[corev1.ResourceName]string
	}
	tests := []struct {
		name  string
		class berthv1alpha1.Class
		pod   *corev1.Pod
		// want is each container's resources, init containers first.
		want []resources
	}{
		{
			name:  "no requests or limits get the class default",
			class: workspace,
			pod:   testutil.Pod("w").Obj(),
			want: []resources{{
				requests: map[corev1.ResourceName]string{cpu: "1", mem: "2Gi"},
				limits:   map[corev1.ResourceName]string{cpu: "1", mem: "2Gi"},
			}},
		},
		{
			name:  "request only gets a limit of the class max",
			class: workspace,
			pod:   testutil.Pod("w").Request(cpu, "500m").Request(mem, "1Gi").Obj(),
			want: []resources{{
				requests: map[corev1.ResourceName]string{cpu: "500m", mem: "1Gi"},
				limits:   map[corev1.ResourceName]string{cpu: "4", mem: "8Gi"},
			}},
		},
		{
			name:  "explicit values are kept",
			class: workspace,
			pod:   testutil.Pod("w").Resource(cpu, "3").Obj(),
			want: []resources{{
				requests: map[corev1.ResourceName]string{cpu: "3", mem: "2Gi"},
				limits:   map[corev1.ResourceName]string{cpu: "3", mem: "2Gi"},
			}},
		},
		{
			name:  "limit only is kept and gets no request",
			class: workspace,
			pod: func() *corev1.Pod {
				p := testutil.Pod("w").Obj()
				p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{mem: resource.MustParse("3Gi")}
				return p
			}(),
			want: []resources{{
				requests: map[corev1.ResourceName]string{cpu: "1"},
				limits:   map[corev1.ResourceName]string{cpu: "1", mem: "3Gi"},
			}},
		},
		{
			name:  "init containers and every container get defaults",
			class: workspace,
			pod: testutil.Pod("w").InitContainer(corev1.Container{Name: "init", Image: testutil.DefaultImage}).
				Container(corev1.Container{Name: "sidecar", Image: testutil.DefaultImage}).Obj(),
			want: []resources{
				{requests: map[corev1.ResourceName]string{cpu: "1", mem: "2Gi"}, limits: map[corev1.ResourceName]string{cpu: "1", mem: "2Gi"}},
				{requests: map[corev1.ResourceName]string{cpu: "1", mem: "2Gi"}, limits: map[corev1.ResourceName]string{cpu: "1", mem: "2Gi"}},
				{requests: map[corev1.ResourceName]string{cpu: "1", mem: "2Gi"}, limits: map[corev1.ResourceName]string{cpu: "1", mem: "2Gi"}},
			},
		},
		{
			name:  "each class has its own defaults",
			class: build,
			pod:   testutil.Pod("b").Obj(),
			want: []resources{{
				requests: map[corev1.ResourceName]string{cpu: "2", mem: "4Gi", eph: "10Gi"},
				limits:   map[corev1.ResourceName]string{cpu: "2", mem: "4Gi", eph: "20Gi"},
			}},
		},
		{
			name:  "inference gets the default GPUs on its first container",
			class: inference,
			pod:   testutil.Pod("vllm").Container(corev1.Container{Name: "proxy", Image: testutil.DefaultImage}).Obj(),
			want: []resources{
				{requests: map[corev1.ResourceName]string{cpu: "4", mem: "16Gi", gpu: "1"}, limits: map[corev1.ResourceName]string{cpu: "4", mem: "16Gi", gpu: "1"}},
				{requests: map[corev1.ResourceName]string{cpu: "4", mem: "16Gi"}, limits: map[corev1.ResourceName]string{cpu: "4", mem: "16Gi"}},
			},
		},
		{
			name:  "inference GPUs asked for anywhere are kept",
			class: inference,
			pod: func() *corev1.Pod {
				p := testutil.Pod("vllm").Container(corev1.Container{Name: "gpu", Image: testutil.DefaultImage}).Obj()
				p.Spec.Containers[1].Resources.Limits = corev1.ResourceList{gpu: resource.MustParse("2")}
				return p
			}(),
			want: []resources{
				{requests: map[corev1.ResourceName]string{cpu: "4", mem: "16Gi"}, limits: map[corev1.ResourceName]string{cpu: "4", mem: "16Gi"}},
				{requests: map[corev1.ResourceName]string{cpu: "4", mem: "16Gi"}, limits: map[corev1.ResourceName]string{cpu: "4", mem: "16Gi", gpu: "2"}},
			},
		},
		{
			name:  "workspaces get no GPUs",
			class: workspace,
			pod:   testutil.Pod("w").Resource(cpu, "2").Resource(mem, "4Gi").Obj(),
			want: []resources{{
				requests: map[corev1.ResourceName]string{cpu: "2", mem: "4Gi"},
				limits:   map[corev1.ResourceName]string{cpu: "2", mem: "4Gi"},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mutate(t, tt.pod, target(t, tt.class, testOrg().Obj()))
			cs := append(append([]corev1.Container{}, got.Spec.InitContainers...), got.Spec.Containers...)
			require.Len(t, cs, len(tt.want))
			for i, c := range cs {
				assert.Equal(t, tt.want[i].requests, quantities(c.Resources.Requests), "requests of %s", c.Name)
				assert.Equal(t, tt.want[i].limits, quantities(c.Resources.Limits), "limits of %s", c.Name)
			}
		})
	}
}

func TestMutatePodNoClassPolicy(t *testing.T) {
	tests := []struct {
		name  string
		class berthv1alpha1.Class
	}{
		{name: "workspace", class: workspace},
		{name: "inference without default GPUs", class: inference},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mutate(t, testutil.Pod("p").Obj(), target(t, tt.class, testutil.Org("acme").Obj()))
			assert.Empty(t, got.Spec.Containers[0].Resources.Requests)
			assert.Empty(t, got.Spec.Containers[0].Resources.Limits)
		})
	}
}

func TestMutatePodBuildScratch(t *testing.T) {
	initC := corev1.Container{Name: "fetch", Image: testutil.DefaultImage}
	sidecar := corev1.Container{Name: "log", Image: testutil.DefaultImage}
	tests := []struct {
		name                         string
		org                          *berthv1alpha1.Organization
		pod                          *corev1.Pod
		wantSizeLimit                string
		wantRequest, wantLimit       string
		wantOtherHasEphemeralStorage bool
	}{
		{
			name:          "default sizes",
			org:           testOrg().Obj(),
			pod:           testutil.Pod("b").InitContainer(initC).Container(sidecar).Obj(),
			wantSizeLimit: "20Gi", wantRequest: "10Gi", wantLimit: "20Gi",
		},
		{
			name:          "sizes from the org",
			org:           testOrg().BuildScratch("50Gi", "100Gi").Obj(),
			pod:           testutil.Pod("b").InitContainer(initC).Container(sidecar).Obj(),
			wantSizeLimit: "100Gi", wantRequest: "50Gi", wantLimit: "100Gi",
		},
		{
			name:          "org sets only the limit",
			org:           testOrg().BuildScratch("", "30Gi").Obj(),
			pod:           testutil.Pod("b").Obj(),
			wantSizeLimit: "30Gi", wantRequest: "10Gi", wantLimit: "30Gi",
		},
		{
			name:          "a larger explicit ephemeral storage is kept",
			org:           testOrg().Obj(),
			pod:           testutil.Pod("b").Resource(eph, "15Gi").Container(sidecar).Obj(),
			wantSizeLimit: "20Gi", wantRequest: "15Gi", wantLimit: "15Gi",
		},
		{
			// Builds are fitted on a node's disk by their requests: one
			// asking for less would pack past what the disk holds.
			name:          "a smaller explicit request is raised to the org's",
			org:           testOrg().Obj(),
			pod:           testutil.Pod("b").Resource(eph, "1Mi").Container(sidecar).Obj(),
			wantSizeLimit: "20Gi", wantRequest: "10Gi", wantLimit: "10Gi",
		},
		{
			name:          "a smaller request alone is raised, the org's limit added",
			org:           testOrg().Obj(),
			pod:           testutil.Pod("b").Request(eph, "1Mi").Obj(),
			wantSizeLimit: "20Gi", wantRequest: "10Gi", wantLimit: "20Gi",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mutate(t, tt.pod, target(t, build, tt.org))

			var scratch []corev1.Volume
			for _, v := range got.Spec.Volumes {
				if v.Name == webhooks.ScratchVolume {
					scratch = append(scratch, v)
				}
			}
			require.Len(t, scratch, 1)
			require.NotNil(t, scratch[0].EmptyDir, "scratch is an emptyDir on the node's disk")
			require.NotNil(t, scratch[0].EmptyDir.SizeLimit)
			assert.Equal(t, tt.wantSizeLimit, scratch[0].EmptyDir.SizeLimit.String())
			assert.Empty(t, scratch[0].EmptyDir.Medium)

			for _, c := range append(append([]corev1.Container{}, got.Spec.InitContainers...), got.Spec.Containers...) {
				assert.Contains(t, c.VolumeMounts, corev1.VolumeMount{Name: webhooks.ScratchVolume, MountPath: "/workspace"}, "container %s", c.Name)
			}

			first := got.Spec.Containers[0]
			assert.Equal(t, tt.wantRequest, ptr.To(first.Resources.Requests[eph]).String())
			assert.Equal(t, tt.wantLimit, ptr.To(first.Resources.Limits[eph]).String())
			for _, c := range got.Spec.Containers[1:] {
				assert.NotContains(t, c.Resources.Requests, eph, "only the first container holds the scratch, container %s", c.Name)
				assert.NotContains(t, c.Resources.Limits, eph, "container %s", c.Name)
			}
		})
	}
}

func TestMutatePodBuildKeepsUserWorkspaceMount(t *testing.T) {
	pod := testutil.Pod("b").Obj()
	pod.Spec.Volumes = []corev1.Volume{{Name: "src", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "src", MountPath: "/workspace"}}

	got := mutate(t, pod, target(t, build, testOrg().Obj()))
	assert.Equal(t, []corev1.VolumeMount{{Name: "src", MountPath: "/workspace"}}, got.Spec.Containers[0].VolumeMounts)
}

func TestMutatePodBuildCache(t *testing.T) {
	initC := corev1.Container{Name: "fetch", Image: testutil.DefaultImage}
	sidecar := corev1.Container{Name: "log", Image: testutil.DefaultImage}
	wantEnv := []corev1.EnvVar{
		{Name: "MAVEN_OPTS", Value: "-Dmaven.repo.local=/cache/m2"},
		{Name: "GRADLE_USER_HOME", Value: "/cache/gradle"},
	}
	cacheMount := corev1.VolumeMount{Name: webhooks.CacheVolume, MountPath: "/cache"}

	t.Run("claim set", func(t *testing.T) {
		got := mutate(t, testutil.Pod("b").InitContainer(initC).Container(sidecar).Obj(), target(t, build, testOrg().BuildCacheClaim("acme-cache").Obj()))
		assert.Contains(t, got.Spec.Volumes, corev1.Volume{
			Name:         webhooks.CacheVolume,
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "acme-cache"}},
		})
		for _, c := range append(append([]corev1.Container{}, got.Spec.InitContainers...), got.Spec.Containers...) {
			assert.Contains(t, c.VolumeMounts, cacheMount, "container %s", c.Name)
		}
		for _, c := range got.Spec.Containers {
			assert.Equal(t, wantEnv, c.Env, "container %s", c.Name)
		}
	})

	t.Run("user env kept", func(t *testing.T) {
		pod := testutil.Pod("b").Obj()
		pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "MAVEN_OPTS", Value: "-Xmx2g"}}
		got := mutate(t, pod, target(t, build, testOrg().BuildCacheClaim("acme-cache").Obj()))
		assert.Equal(t, []corev1.EnvVar{{Name: "MAVEN_OPTS", Value: "-Xmx2g"}, wantEnv[1]}, got.Spec.Containers[0].Env)
	})

	t.Run("no claim", func(t *testing.T) {
		got := mutate(t, testutil.Pod("b").Obj(), target(t, build, testOrg().Obj()))
		for _, v := range got.Spec.Volumes {
			assert.NotEqual(t, webhooks.CacheVolume, v.Name)
		}
		assert.NotContains(t, got.Spec.Containers[0].VolumeMounts, cacheMount)
		assert.Empty(t, got.Spec.Containers[0].Env)
	})

	t.Run("other classes get no cache", func(t *testing.T) {
		got := mutate(t, testutil.Pod("w").Obj(), target(t, workspace, testOrg().BuildCacheClaim("acme-cache").Obj()))
		assert.Empty(t, got.Spec.Volumes)
		assert.Empty(t, got.Spec.Containers[0].VolumeMounts)
		assert.Empty(t, got.Spec.Containers[0].Env)
	})
}

func TestMutatePodAnnotations(t *testing.T) {
	tests := []struct {
		name  string
		class berthv1alpha1.Class
		pod   *corev1.Pod
		want  map[string]string
	}{
		{
			name:  "build may not be evicted or disrupted",
			class: build,
			pod:   testutil.Pod("b").Obj(),
			want: map[string]string{
				"cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
				"karpenter.sh/do-not-disrupt":                    "true",
			},
		},
		{
			name:  "build overrides the user and keeps other annotations",
			class: build,
			pod:   testutil.Pod("b").Annotation(webhooks.AnnotationSafeToEvict, "true").Annotation("team", "core").Obj(),
			want: map[string]string{
				"cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
				"karpenter.sh/do-not-disrupt":                    "true",
				"team":                                           "core",
			},
		},
		{name: "workspace", class: workspace, pod: testutil.Pod("w").Obj()},
		{name: "inference", class: inference, pod: testutil.Pod("i").Obj()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mutate(t, tt.pod, target(t, tt.class, testOrg().Obj()))
			assert.Equal(t, tt.want, got.Annotations)
		})
	}
}

func TestMutatePodSecurityDefaults(t *testing.T) {
	runtimeDefault := &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	wantContainer := &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		SeccompProfile:           runtimeDefault,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	localhost := &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptr.To("profiles/build.json")}

	tests := []struct {
		name string
		pod  *corev1.Pod
		// wantPod is the Pod's security context; wantContainers each
		// container's, init containers first.
		wantPod        *corev1.PodSecurityContext
		wantContainers []*corev1.SecurityContext
	}{
		{
			name: "defaults everywhere, init containers included",
			pod: testutil.Pod("w").InitContainer(corev1.Container{Name: "init", Image: testutil.DefaultImage}).
				Container(corev1.Container{Name: "sidecar", Image: testutil.DefaultImage}).Obj(),
			wantPod: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](1000),
				FSGroup:        ptr.To[int64](1000),
				SeccompProfile: runtimeDefault,
			},
			wantContainers: []*corev1.SecurityContext{wantContainer, wantContainer, wantContainer},
		},
		{
			name: "explicit values are kept",
			pod: func() *corev1.Pod {
				p := testutil.Pod("w").InitContainer(corev1.Container{Name: "init", Image: testutil.DefaultImage}).Obj()
				p.Spec.SecurityContext = &corev1.PodSecurityContext{
					RunAsNonRoot:   ptr.To(false),
					RunAsUser:      ptr.To[int64](2000),
					RunAsGroup:     ptr.To[int64](3000),
					FSGroup:        ptr.To[int64](4000),
					SeccompProfile: localhost,
				}
				p.Spec.InitContainers[0].SecurityContext = &corev1.SecurityContext{
					RunAsUser:                ptr.To[int64](0),
					AllowPrivilegeEscalation: ptr.To(true),
					Capabilities:             &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE"}, Drop: []corev1.Capability{"NET_RAW"}},
				}
				p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
					RunAsNonRoot:             ptr.To(false),
					AllowPrivilegeEscalation: ptr.To(false),
					SeccompProfile:           localhost,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				}
				return p
			}(),
			wantPod: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(false),
				RunAsUser:      ptr.To[int64](2000),
				RunAsGroup:     ptr.To[int64](3000),
				FSGroup:        ptr.To[int64](4000),
				SeccompProfile: localhost,
			},
			wantContainers: []*corev1.SecurityContext{
				{
					RunAsUser:                ptr.To[int64](0),
					RunAsNonRoot:             ptr.To(true),
					AllowPrivilegeEscalation: ptr.To(true),
					SeccompProfile:           runtimeDefault,
					Capabilities:             &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE"}, Drop: []corev1.Capability{"NET_RAW", "ALL"}},
				},
				{
					RunAsNonRoot:             ptr.To(false),
					AllowPrivilegeEscalation: ptr.To(false),
					SeccompProfile:           localhost,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			},
		},
		{
			// The API server rejects allowPrivilegeEscalation: false next to
			// privileged or CAP_SYS_ADMIN, so berth leaves it unset there and
			// the validating webhook denies the container instead.
			name: "privileged and SYS_ADMIN containers keep allowPrivilegeEscalation unset",
			pod: func() *corev1.Pod {
				p := testutil.Pod("w").
					Container(corev1.Container{Name: "sys-admin", Image: testutil.DefaultImage}).
					Container(corev1.Container{Name: "cap-sys-admin", Image: testutil.DefaultImage}).Obj()
				p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
				p.Spec.Containers[1].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}}}
				p.Spec.Containers[2].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"CAP_SYS_ADMIN"}}}
				return p
			}(),
			wantPod: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](1000),
				FSGroup:        ptr.To[int64](1000),
				SeccompProfile: runtimeDefault,
			},
			wantContainers: []*corev1.SecurityContext{
				{
					Privileged:     ptr.To(true),
					RunAsNonRoot:   ptr.To(true),
					SeccompProfile: runtimeDefault,
					Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				{
					RunAsNonRoot:   ptr.To(true),
					SeccompProfile: runtimeDefault,
					Capabilities:   &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}, Drop: []corev1.Capability{"ALL"}},
				},
				{
					RunAsNonRoot:   ptr.To(true),
					SeccompProfile: runtimeDefault,
					Capabilities:   &corev1.Capabilities{Add: []corev1.Capability{"CAP_SYS_ADMIN"}, Drop: []corev1.Capability{"ALL"}},
				},
			},
		},
	}
	for _, tt := range tests {
		for _, class := range berthv1alpha1.Classes {
			t.Run(tt.name+"/"+string(class), func(t *testing.T) {
				got := mutate(t, tt.pod, target(t, class, testOrg().Obj()))
				assert.Equal(t, tt.wantPod, got.Spec.SecurityContext)
				cs := append(append([]corev1.Container{}, got.Spec.InitContainers...), got.Spec.Containers...)
				require.Len(t, cs, len(tt.wantContainers))
				for i, c := range cs {
					assert.Equal(t, tt.wantContainers[i], c.SecurityContext, "container %s", c.Name)
				}
			})
		}
	}
}

func TestMutatePodSchedulerName(t *testing.T) {
	tests := []struct {
		name       string
		pod        *corev1.Pod
		configured string
		want       string
	}{
		{name: "empty", pod: testutil.Pod("w").Obj(), configured: "berth-scheduler", want: "berth-scheduler"},
		{name: "default-scheduler", pod: testutil.Pod("w").SchedulerName(corev1.DefaultSchedulerName).Obj(), configured: "berth-scheduler", want: "berth-scheduler"},
		{name: "custom kept", pod: testutil.Pod("w").SchedulerName("volcano").Obj(), configured: "berth-scheduler", want: "volcano"},
		{name: "none configured keeps the Pod's", pod: testutil.Pod("w").Obj(), configured: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tgt := target(t, workspace, testOrg().Obj())
			tgt.Config.SchedulerName = tt.configured
			got := mutate(t, tt.pod, tgt)
			assert.Equal(t, tt.want, got.Spec.SchedulerName)
		})
	}
}

func TestMutatePodPlacement(t *testing.T) {
	required := func(terms ...corev1.NodeSelectorTerm) *corev1.NodeSelector {
		return &corev1.NodeSelector{NodeSelectorTerms: terms}
	}
	term := func(rs ...corev1.NodeSelectorRequirement) corev1.NodeSelectorTerm {
		return corev1.NodeSelectorTerm{MatchExpressions: rs}
	}
	preferSpot := []corev1.PreferredSchedulingTerm{{Weight: 100, Preference: term(spotIn)}}
	twoZones := func() *testutil.PodBuilder { return testutil.Pod("p").RequiredNodeTerms(term(zoneA), term(zoneB)) }

	tests := []struct {
		name            string
		class           berthv1alpha1.Class
		policy          berthv1alpha1.SpotPolicy
		pod             *corev1.Pod
		wantAffinity    *corev1.NodeAffinity
		wantTolerations []corev1.Toleration
	}{
		{
			name: "workspace SpotOnly requires spot", class: workspace, policy: berthv1alpha1.SpotOnly,
			pod:             testutil.Pod("w").Obj(),
			wantAffinity:    &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: required(term(spotIn))},
			wantTolerations: []corev1.Toleration{spotTol},
		},
		{
			name: "workspace PreferSpot prefers spot", class: workspace, policy: berthv1alpha1.PreferSpot,
			pod:             testutil.Pod("w").Obj(),
			wantAffinity:    &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: preferSpot},
			wantTolerations: []corev1.Toleration{spotTol},
		},
		{
			name: "unset policy is PreferSpot", class: workspace, policy: "",
			pod:             testutil.Pod("w").Obj(),
			wantAffinity:    &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: preferSpot},
			wantTolerations: []corev1.Toleration{spotTol},
		},
		{
			name: "workspace OnDemand avoids spot", class: workspace, policy: berthv1alpha1.OnDemand,
			pod:          testutil.Pod("w").Obj(),
			wantAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: required(term(spotNotIn))},
		},
		{
			name: "user tolerations kept, spot toleration added once", class: workspace, policy: berthv1alpha1.SpotOnly,
			pod:             testutil.Pod("w").Toleration(noSchedule).Toleration(spotTol).Obj(),
			wantAffinity:    &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: required(term(spotIn))},
			wantTolerations: []corev1.Toleration{noSchedule, spotTol},
		},
		{
			name: "workspace SpotOnly adds spot to every user term", class: workspace, policy: berthv1alpha1.SpotOnly,
			pod:             twoZones().Obj(),
			wantAffinity:    &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: required(term(zoneA, spotIn), term(zoneB, spotIn))},
			wantTolerations: []corev1.Toleration{spotTol},
		},
		{
			name: "build SpotOnly requires local SSD and spot in every user term", class: build, policy: berthv1alpha1.SpotOnly,
			pod:             twoZones().Obj(),
			wantAffinity:    &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: required(term(zoneA, localSSD, spotIn), term(zoneB, localSSD, spotIn))},
			wantTolerations: []corev1.Toleration{spotTol},
		},
		{
			name: "build PreferSpot requires local SSD in every user term", class: build, policy: berthv1alpha1.PreferSpot,
			pod: twoZones().Obj(),
			wantAffinity: &corev1.NodeAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution:  required(term(zoneA, localSSD), term(zoneB, localSSD)),
				PreferredDuringSchedulingIgnoredDuringExecution: preferSpot,
			},
			wantTolerations: []corev1.Toleration{spotTol},
		},
		{
			name: "build OnDemand", class: build, policy: berthv1alpha1.OnDemand,
			pod:          testutil.Pod("b").Obj(),
			wantAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: required(term(localSSD, spotNotIn))},
		},
		{
			name: "build term already requiring local SSD is not doubled", class: build, policy: berthv1alpha1.OnDemand,
			pod:          testutil.Pod("b").RequiredNodeTerms(term(localSSD)).Obj(),
			wantAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: required(term(localSSD, spotNotIn))},
		},
		{
			name: "inference requires GPU nodes whatever the spot policy", class: inference, policy: berthv1alpha1.SpotOnly,
			pod:             testutil.Pod("i").Obj(),
			wantAffinity:    &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: required(term(gpuNode))},
			wantTolerations: []corev1.Toleration{gpuTol},
		},
		{
			name: "inference PreferSpot gets no spot terms", class: inference, policy: berthv1alpha1.PreferSpot,
			pod:             twoZones().Toleration(noSchedule).Obj(),
			wantAffinity:    &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: required(term(zoneA, gpuNode), term(zoneB, gpuNode))},
			wantTolerations: []corev1.Toleration{noSchedule, gpuTol},
		},
		{
			name: "inference OnDemand gets no spot terms", class: inference, policy: berthv1alpha1.OnDemand,
			pod:             testutil.Pod("i").Obj(),
			wantAffinity:    &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: required(term(gpuNode))},
			wantTolerations: []corev1.Toleration{gpuTol},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mutate(t, tt.pod, target(t, tt.class, testOrg().SpotPolicy(tt.policy).Obj()))
			require.NotNil(t, got.Spec.Affinity)
			assert.Equal(t, tt.wantAffinity, got.Spec.Affinity.NodeAffinity)
			assert.Equal(t, tt.wantTolerations, got.Spec.Tolerations)
			assert.Equal(t, "berth-scheduler", got.Spec.SchedulerName)
		})
	}
}

func TestMutatePodKeepsOtherAffinity(t *testing.T) {
	pod := testutil.Pod("w").Obj()
	anti := &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
		LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ide"}},
		TopologyKey:   corev1.LabelHostname,
	}}}
	pod.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: anti}
	got := mutate(t, pod, target(t, workspace, testOrg().SpotPolicy(berthv1alpha1.SpotOnly).Obj()))
	assert.Equal(t, anti, got.Spec.Affinity.PodAntiAffinity)
	assert.NotNil(t, got.Spec.Affinity.NodeAffinity)
}

func TestMutatePodPriorityClass(t *testing.T) {
	never := corev1.PreemptNever
	tests := []struct {
		name       string
		pc         *schedulingv1.PriorityClass
		pod        *corev1.Pod
		wantName   string
		wantValue  *int32
		wantPolicy *corev1.PreemptionPolicy
	}{
		{
			name: "no PriorityClass in the cluster",
			pod:  testutil.Pod("b").Obj(),
		},
		{
			name:       "set from the class's PriorityClass",
			pc:         &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "berth-build"}, Value: 1000, PreemptionPolicy: &never},
			pod:        testutil.Pod("b").Obj(),
			wantName:   "berth-build",
			wantValue:  ptr.To[int32](1000),
			wantPolicy: ptr.To(corev1.PreemptNever),
		},
		{
			name:      "PriorityClass without a preemption policy",
			pc:        &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "berth-build"}, Value: 1000},
			pod:       testutil.Pod("b").Obj(),
			wantName:  "berth-build",
			wantValue: ptr.To[int32](1000),
		},
		{
			name: "the Pod's own PriorityClass is replaced",
			pc:   &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "berth-build"}, Value: 1000, PreemptionPolicy: &never},
			pod: func() *corev1.Pod {
				p := testutil.Pod("b").Obj()
				p.Spec.PriorityClassName = "system-cluster-critical"
				p.Spec.Priority = ptr.To[int32](2000000000)
				return p
			}(),
			wantName:   "berth-build",
			wantValue:  ptr.To[int32](1000),
			wantPolicy: ptr.To(corev1.PreemptNever),
		},
		{
			name: "the cluster's global default is replaced",
			pc:   &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "berth-build"}, Value: 1000, PreemptionPolicy: &never},
			pod: func() *corev1.Pod {
				p := testutil.Pod("b").Obj()
				p.Spec.PriorityClassName = "cluster-default"
				p.Spec.Priority = ptr.To[int32](10)
				return p
			}(),
			wantName:   "berth-build",
			wantValue:  ptr.To[int32](1000),
			wantPolicy: ptr.To(corev1.PreemptNever),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tgt := target(t, build, testOrg().Obj())
			tgt.PriorityClass = tt.pc
			tgt.GlobalDefaultPriorityClass = "cluster-default"
			got := mutate(t, tt.pod, tgt)
			assert.Equal(t, tt.wantName, got.Spec.PriorityClassName)
			assert.Equal(t, tt.wantValue, got.Spec.Priority)
			assert.Equal(t, tt.wantPolicy, got.Spec.PreemptionPolicy)
		})
	}
}

// richPod is a Pod that sets a bit of everything MutatePod touches.
func richPod() *corev1.Pod {
	p := testutil.Pod("rich").Class(workspace).Label(berthv1alpha1.LabelOrg, "other").
		Request(cpu, "500m").Resource(mem, "1Gi").
		InitContainer(corev1.Container{Name: "init", Image: testutil.DefaultImage}).
		Container(corev1.Container{Name: "sidecar", Image: testutil.DefaultImage, Env: []corev1.EnvVar{{Name: "GRADLE_USER_HOME", Value: "/home/g"}}}).
		RequiredNodeTerms(corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{zoneA}}, corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{zoneB}}).
		Toleration(noSchedule).Toleration(spotTol).
		SchedulerName(corev1.DefaultSchedulerName).Obj()
	p.Spec.Affinity.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution = []corev1.PreferredSchedulingTerm{{Weight: 10, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{spotIn}}}}
	p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1234)}
	p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"NET_RAW"}}}
	p.Spec.Containers[1].Resources.Limits = corev1.ResourceList{gpu: resource.MustParse("1")}
	return p
}

func TestMutatePodIdempotent(t *testing.T) {
	pods := map[string]*corev1.Pod{
		"minimal": testutil.Pod("min").Obj(),
		"rich":    richPod(),
	}
	policies := []berthv1alpha1.SpotPolicy{"", berthv1alpha1.SpotOnly, berthv1alpha1.PreferSpot, berthv1alpha1.OnDemand}
	never := corev1.PreemptNever
	for podName, pod := range pods {
		for _, class := range berthv1alpha1.Classes {
			for _, policy := range policies {
				t.Run(podName+"/"+string(class)+"/"+string(policy), func(t *testing.T) {
					org := testOrg().SpotPolicy(policy).BuildCacheClaim("cache").BuildScratch("5Gi", "9Gi").Obj()
					tgt := target(t, class, org)
					tgt.PriorityClass = &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "berth-" + string(class)}, Value: 10, PreemptionPolicy: &never}
					// mutate asserts that a second pass changes nothing.
					mutate(t, pod, tgt)
				})
			}
		}
	}
}

// The quota mark is berth's: a limited workspace, and a build with GPUs in
// an org that caps GPUs, are marked for the validating webhook, and a mark
// the user wrote is removed from every other Pod.
func TestMutatePodQuotaMarks(t *testing.T) {
	forged := func() *corev1.Pod {
		return testutil.Pod("w").Annotation(berthv1alpha1.AnnotationQuota, berthv1alpha1.QuotaCharged).Obj()
	}
	limited := mutate(t, forged(), target(t, workspace, testOrg().MaxWorkspaces(5).Obj()))
	assert.Equal(t, berthv1alpha1.QuotaCharged, limited.Annotations[berthv1alpha1.AnnotationQuota])

	free := mutate(t, forged(), target(t, workspace, testOrg().Obj()))
	assert.NotContains(t, free.Annotations, berthv1alpha1.AnnotationQuota)

	gpuBuild := testutil.Pod("b").Class(build).Command("make").Resource("nvidia.com/gpu", "1").Obj()
	charged := mutate(t, gpuBuild, target(t, build, testOrg().MaxGPUs(4).Obj()))
	assert.Equal(t, berthv1alpha1.QuotaCharged, charged.Annotations[berthv1alpha1.AnnotationQuota], "a build's GPUs are charged too")
}

// A workspace leaves a dead node after WorkspaceNodeLossSeconds, not the
// API server's 300 s; builds and inference keep the default, and a shorter
// toleration of the Pod's own stays.
func TestMutatePodWorkspaceNodeLoss(t *testing.T) {
	def := func(key string, s int64) corev1.Toleration {
		return corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To(s)}
	}
	seconds := func(pod *corev1.Pod) map[string]int64 {
		out := map[string]int64{}
		for _, tol := range pod.Spec.Tolerations {
			if tol.Effect == corev1.TaintEffectNoExecute && tol.TolerationSeconds != nil {
				out[tol.Key] = *tol.TolerationSeconds
			}
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		class berthv1alpha1.Class
		have  []corev1.Toleration
		want  map[string]int64
	}{
		{"the API server's defaults shortened", workspace,
			[]corev1.Toleration{def(corev1.TaintNodeNotReady, 300), def(corev1.TaintNodeUnreachable, 300)},
			map[string]int64{corev1.TaintNodeNotReady: 30, corev1.TaintNodeUnreachable: 30}},
		{"none yet", workspace, nil,
			map[string]int64{corev1.TaintNodeNotReady: 30, corev1.TaintNodeUnreachable: 30}},
		{"a shorter one kept", workspace,
			[]corev1.Toleration{def(corev1.TaintNodeNotReady, 5), def(corev1.TaintNodeUnreachable, 300)},
			map[string]int64{corev1.TaintNodeNotReady: 5, corev1.TaintNodeUnreachable: 30}},
		{"a build keeps the defaults", build,
			[]corev1.Toleration{def(corev1.TaintNodeNotReady, 300), def(corev1.TaintNodeUnreachable, 300)},
			map[string]int64{corev1.TaintNodeNotReady: 300, corev1.TaintNodeUnreachable: 300}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tgt := target(t, tc.class, testOrg().Obj())
			tgt.Config.WorkspaceNodeLossSeconds = 30
			pod := testutil.Pod("w").Class(tc.class).Obj()
			pod.Spec.Tolerations = tc.have
			got := mutate(t, pod, tgt)
			assert.Equal(t, tc.want, seconds(got))
			assert.Empty(t, webhooks.ValidateTolerations(got.Spec.Tolerations, tgt, nil), "berth admits what it wrote")
		})
	}
}
