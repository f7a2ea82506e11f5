package placement

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	fwk "k8s.io/kube-scheduler/framework"
	schedframework "k8s.io/kubernetes/pkg/scheduler/framework"

	"berth.dev/berth/pkg/testutil"
)

// denseNode is a spot node holding n small workspaces and builds builds,
// as the scheduler's snapshot holds it.
func denseNode(t testing.TB, n, builds int) *schedframework.NodeInfo {
	t.Helper()
	ni := schedframework.NewNodeInfo()
	ni.SetNode(spotNode("dense"))
	for i := range n {
		ni.AddPod(workspace(fmt.Sprintf("ws-%d", i), "dense"))
	}
	for i := range builds {
		ni.AddPod(build(fmt.Sprintf("b-%d", i), "dense"))
	}
	return ni
}

// filterAndScore runs the plugin on one node as the scheduler does in a
// cycle: PreScore once, then Filter and Score.
func filterAndScore(t testing.TB, p *Plugin, pod *corev1.Pod, ni fwk.NodeInfo) (*fwk.Status, int64) {
	t.Helper()
	cs := schedframework.NewCycleState()
	p.PreScore(t.Context(), cs, pod, nil)
	st := p.Filter(t.Context(), cs, pod, ni)
	s, sst := p.Score(t.Context(), cs, pod, ni)
	require.True(t, sst.IsSuccess(), sst.Message())
	return st, s
}

// The plugin runs on every node in every cycle: once it has read a node,
// it must not walk the node's Pods nor allocate again until the node
// changes, whatever the Pod's class.
func TestPluginAllocatesNothingPerNode(t *testing.T) {
	p := &Plugin{d: testDecider(t)}
	ni := denseNode(t, 100, 3)
	for _, pod := range []*corev1.Pod{workspace("ws", ""), vllm("v", ""), build("b", ""), testutil.Pod("plain").Obj()} {
		cs := schedframework.NewCycleState()
		scored := p.PreScore(t.Context(), cs, pod, nil).IsSuccess()
		allocs := testing.AllocsPerRun(100, func() {
			p.Filter(t.Context(), cs, pod, ni)
			if scored {
				p.Score(t.Context(), cs, pod, ni)
			}
		})
		assert.Zero(t, allocs, "allocations per node for %s", pod.Name)
	}
}

// A build still sees every build on the node, those the scheduler has
// assumed there but not yet bound included.
func TestPluginCountsAssumedBuilds(t *testing.T) {
	p := &Plugin{d: testDecider(t)}
	ni := denseNode(t, 100, 0)
	ni.SetNode(node("dense", "16", "128Gi", "600Gi").label("berth.dev/build-capacity", "2").obj())
	st, empty := filterAndScore(t, p, build("b", ""), ni)
	require.True(t, st.IsSuccess(), st.Message())

	ni.AddPod(build("b-0", "dense")) // assumed: in the snapshot, not yet bound
	st, one := filterAndScore(t, p, build("b", ""), ni)
	require.True(t, st.IsSuccess(), st.Message())
	assert.Less(t, one, empty, "a node with a build scores lower for the next one")

	ni.AddPod(build("b-1", "dense"))
	st, _ = filterAndScore(t, p, build("b", ""), ni)
	assert.Equal(t, fwk.Unschedulable, st.Code())
	assert.Equal(t, "node dense runs 2 builds, its disk's build capacity (label berth.dev/build-capacity)", st.Message())

	// A workspace is not held back by the builds.
	st, _ = filterAndScore(t, p, workspace("ws", ""), ni)
	assert.True(t, st.IsSuccess(), st.Message())
}

// The plugin's memo of a node's labels follows the node: a spot node
// relabelled as a GPU node (a new Node object in the snapshot, as an update
// brings) refuses a workspace from the next cycle on, and back.
func TestPluginSeesANodeRelabelled(t *testing.T) {
	p := &Plugin{d: testDecider(t)}
	ni := denseNode(t, 10, 0)
	st, _ := filterAndScore(t, p, workspace("ws", ""), ni)
	require.True(t, st.IsSuccess(), st.Message())

	ni.SetNode(gpuNode("dense"))
	st, _ = filterAndScore(t, p, workspace("ws", ""), ni)
	assert.Equal(t, fwk.Unschedulable, st.Code(), "a workspace on a node now labelled GPU")

	ni.SetNode(spotNode("dense"))
	st, _ = filterAndScore(t, p, workspace("ws", ""), ni)
	assert.True(t, st.IsSuccess(), st.Message())
}
