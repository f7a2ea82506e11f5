package placement

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/plugins/config"
)

func newTestDecider(t *testing.T) *Decider {
	t.Helper()
	d, err := NewDecider(&config.PlacementArgs{})
	require.NoError(t, err)
	return d
}

func decideNode(name string, labels map[string]string, cpu, mem, eph, gpu string) *corev1.Node {
	alloc := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem),
		corev1.ResourceEphemeralStorage: resource.MustParse(eph),
	}
	if gpu != "" {
		alloc["nvidia.com/gpu"] = resource.MustParse(gpu)
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Status: corev1.NodeStatus{Allocatable: alloc}}
}

var (
	decideSpotLabels = map[string]string{"kubernetes.azure.com/scalesetpriority": "spot", "berth.dev/local-ssd": "true"}
	decideGPULabels  = map[string]string{"nvidia.com/gpu.present": "true"}
)

func runningPods(n int, class berthv1alpha1.Class, cpu string) []*corev1.Pod {
	var out []*corev1.Pod
	for range n {
		out = append(out, testutil.Pod("p").Class(class).Resource(corev1.ResourceCPU, cpu).Obj())
	}
	return out
}

func TestFilter(t *testing.T) {
	d := newTestDecider(t)
	gpuNode := StateOf(decideNode("g", decideGPULabels, "96", "880Gi", "3500Gi", "4"), nil)
	spot := decideNode("s", decideSpotLabels, "16", "128Gi", "100Gi", "")
	labelled := decideNode("l", map[string]string{"berth.dev/build-capacity": "1"}, "16", "64Gi", "600Gi", "")
	daemonPod := testutil.Pod("ds").Obj()
	daemonPod.OwnerReferences = []metav1.OwnerReference{{Kind: "DaemonSet", Name: "x", Controller: ptr.To(true)}}
	tests := []struct {
		name string
		pod  *corev1.Pod
		node *NodeState
		want string // a fragment of the reason; "" means allowed
	}{
		{"inference on GPU", testutil.Pod("v").Class(berthv1alpha1.ClassInference).Obj(), gpuNode, ""},
		{"workspace on GPU", testutil.Pod("w").Class(berthv1alpha1.ClassWorkspace).Obj(), gpuNode, "kept for inference"},
		{"plain pod on GPU", testutil.Pod("p").Obj(), gpuNode, "kept for inference"},
		{"daemon pod on GPU", daemonPod, gpuNode, ""},
		{"build within disk capacity", testutil.Pod("b").Class(berthv1alpha1.ClassBuild).Obj(), StateOf(spot, runningPods(4, berthv1alpha1.ClassBuild, "1")), ""},
		// The disk is the stock resource fit's, on the scratch request, as
		// an autoscaler reads it: berth adds no count of its own.
		{"build past the expected scratch use, unlabelled", testutil.Pod("b").Class(berthv1alpha1.ClassBuild).Obj(), StateOf(spot, runningPods(5, berthv1alpha1.ClassBuild, "1")), ""},
		{"build past labelled capacity", testutil.Pod("b").Class(berthv1alpha1.ClassBuild).Obj(), StateOf(labelled, runningPods(1, berthv1alpha1.ClassBuild, "1")), "runs 1 builds"},
		{"workspace ignores build capacity", testutil.Pod("w").Class(berthv1alpha1.ClassWorkspace).Obj(), StateOf(labelled, runningPods(1, berthv1alpha1.ClassBuild, "1")), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := d.Filter(tc.pod, ClassOf(tc.pod), tc.node)
			if tc.want == "" {
				assert.Empty(t, got)
			} else {
				assert.Contains(t, got, tc.want)
			}
		})
	}
}

func TestWorkspaceScorePacksTowardTarget(t *testing.T) {
	d := newTestDecider(t)
	spot := decideNode("s", decideSpotLabels, "16", "128Gi", "3000Gi", "")
	req := PodRequest(testutil.Pod("w").Resource(corev1.ResourceCPU, "2").Obj())
	score := func(running int) int64 {
		return d.Score(berthv1alpha1.ClassWorkspace, req, StateOf(spot, runningPods(running, berthv1alpha1.ClassWorkspace, "2")))
	}
	empty, half, atTarget, brim := score(0), score(3), score(5), score(7)
	assert.Less(t, empty, half, "a used node beats an empty one")
	assert.Less(t, half, score(4), "fuller is better up to the target")
	assert.Greater(t, atTarget, brim, "past the target the score falls")
	assert.Greater(t, brim, empty, "but a nearly full node still beats opening an empty one")
	assert.LessOrEqual(t, score(6), int64(MaxScore))
}

func TestBuildScoreSpreadsButPrefersNodesUp(t *testing.T) {
	d := newTestDecider(t)
	n := decideNode("s", decideSpotLabels, "16", "128Gi", "200Gi", "") // capacity 10 builds
	req := Request{CPU: 1000}
	empty := d.Score(berthv1alpha1.ClassBuild, req, StateOf(n, nil))
	oneWorkspace := d.Score(berthv1alpha1.ClassBuild, req, StateOf(n, runningPods(1, berthv1alpha1.ClassWorkspace, "1")))
	fiveBuilds := d.Score(berthv1alpha1.ClassBuild, req, StateOf(n, runningPods(5, berthv1alpha1.ClassBuild, "1")))
	assert.Equal(t, int64(config.DefaultEmptyNodeScore), empty)
	assert.Equal(t, int64(MaxScore), oneWorkspace, "no builds yet on a node that is up")
	assert.Less(t, fiveBuilds, oneWorkspace, "fewer concurrent builds is better")
	assert.Greater(t, fiveBuilds, empty, "a node up beats an empty one")
}

func TestInferenceScorePacksGPUs(t *testing.T) {
	d := newTestDecider(t)
	g := decideNode("g", decideGPULabels, "96", "880Gi", "3500Gi", "4")
	req := Request{GPU: 1}
	withOne := testutil.Pod("v").Class(berthv1alpha1.ClassInference).Resource("nvidia.com/gpu", "1").Obj()
	assert.Less(t, d.Score(berthv1alpha1.ClassInference, req, StateOf(g, nil)),
		d.Score(berthv1alpha1.ClassInference, req, StateOf(g, []*corev1.Pod{withOne})))
	assert.Equal(t, int64(0), d.Score("", req, StateOf(g, nil)), "Pods without a class score the same everywhere")
}

func TestArgsValidation(t *testing.T) {
	for _, args := range []config.PlacementArgs{
		{Preset: "openstack"},
		{WorkspaceTargetPercent: 150},
		{EmptyNodeScore: 101},
		{BuildScratchBytes: -1},
	} {
		_, err := NewDecider(&args)
		require.Error(t, err, "%+v", args)
		assert.Contains(t, err.Error(), "BerthPlacement args")
	}
	for _, preset := range []string{"aks", "eks", "gke", "karpenter"} {
		_, err := NewDecider(&config.PlacementArgs{Preset: preset})
		assert.NoError(t, err, preset)
	}
}

// The plugin counts a Pod as the quota does: a sidecar's GPU adds to the
// main container's.
func TestPodRequestCountsSidecars(t *testing.T) {
	one := corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("1"), corev1.ResourceCPU: resource.MustParse("500m")}
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "side", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
			Resources: corev1.ResourceRequirements{Requests: one, Limits: one}}},
		Containers: []corev1.Container{{Name: "main", Resources: corev1.ResourceRequirements{Requests: one, Limits: one}}},
	}}
	assert.Equal(t, Request{CPU: 1000, GPU: 2}, PodRequest(pod))
}
