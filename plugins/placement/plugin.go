// Package placement is the BerthPlacement scheduler plugin: it packs
// workspaces onto spot nodes with local SSD, spreads builds so that no node's
// disk carries more builds than it holds, packs vLLM onto GPU nodes and keeps
// everything else off them. The hard rules (affinity, tolerations) are in the
// Pod spec, written by berth's webhook; this plugin mostly scores, and filters
// only where that agrees with the spec. It makes no API calls: it reads the
// scheduler's snapshot and per-cycle state.
package placement

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	fwk "k8s.io/kube-scheduler/framework"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/plugins/config"
)

// Name is the plugin's name in KubeSchedulerConfiguration.
const Name = "BerthPlacement"

// Plugin is the BerthPlacement plugin.
type Plugin struct {
	d    *Decider
	memo nodeMemo
}

var (
	_ fwk.FilterPlugin   = &Plugin{}
	_ fwk.PreScorePlugin = &Plugin{}
	_ fwk.ScorePlugin    = &Plugin{}
)

// New builds the plugin from its args.
func New(_ context.Context, obj runtime.Object, _ fwk.Handle) (fwk.Plugin, error) {
	args := &config.PlacementArgs{}
	if err := frameworkruntime.DecodeInto(obj, args); err != nil {
		return nil, fmt.Errorf("decode %s args: %w", Name, err)
	}
	d, err := NewDecider(args)
	if err != nil {
		return nil, err
	}
	return &Plugin{d: d}, nil
}

// Name returns the plugin's name.
func (p *Plugin) Name() string { return Name }

// Filter keeps non-inference Pods off GPU nodes and builds off full disks.
func (p *Plugin) Filter(_ context.Context, _ fwk.CycleState, pod *corev1.Pod, ni fwk.NodeInfo) *fwk.Status {
	if ni.Node() == nil {
		return fwk.NewStatus(fwk.Error, "node not found")
	}
	// A filter reads only the node and, for a build, its builds: the sums
	// are the scores' (stateOf).
	class := ClassOf(pod)
	n := NodeState{Node: ni.Node()}
	gpu, builds := p.memo.facts(p.d, ni, class == berthv1alpha1.ClassBuild)
	n.Builds = builds
	if why := p.d.filter(pod, class, &n, gpu); why != "" {
		return fwk.NewStatus(fwk.Unschedulable, why)
	}
	return nil
}

const stateKey fwk.StateKey = Name + "/prescore"

type preScoreState struct {
	class berthv1alpha1.Class
	req   Request
}

// Clone shares the state: it is never changed after PreScore.
func (s *preScoreState) Clone() fwk.StateData { return s }

// PreScore computes the Pod's class and request once per cycle; Pods
// without a berth class skip scoring, so they score the same everywhere.
func (p *Plugin) PreScore(_ context.Context, cs fwk.CycleState, pod *corev1.Pod, _ []fwk.NodeInfo) *fwk.Status {
	class := ClassOf(pod)
	if class == "" {
		return fwk.NewStatus(fwk.Skip)
	}
	cs.Write(stateKey, &preScoreState{class: class, req: PodRequest(pod)})
	return nil
}

// Score ranks a node for the Pod.
func (p *Plugin) Score(_ context.Context, cs fwk.CycleState, pod *corev1.Pod, ni fwk.NodeInfo) (int64, *fwk.Status) {
	data, err := cs.Read(stateKey)
	if err != nil {
		return 0, fwk.AsStatus(err)
	}
	s := data.(*preScoreState)
	n := stateOf(ni)
	if s.class == berthv1alpha1.ClassBuild {
		_, n.Builds = p.memo.facts(p.d, ni, true)
	}
	return p.d.Score(s.class, s.req, &n), nil
}

// ScoreExtensions is nil: scores are already 0 to MaxScore.
func (p *Plugin) ScoreExtensions() fwk.ScoreExtensions { return nil }

// stateOf reads a NodeState from the scheduler's snapshot's sums. It runs
// for every node in every cycle, so it allocates nothing. The builds on the
// node are the memo's, and only a build's score reads them.
func stateOf(ni fwk.NodeInfo) NodeState {
	alloc, req := ni.GetAllocatable(), ni.GetRequested()
	return NodeState{
		Node:     ni.Node(),
		AllocCPU: alloc.GetMilliCPU(), AllocMemory: alloc.GetMemory(), AllocEphemeral: alloc.GetEphemeralStorage(),
		AllocGPU: alloc.GetScalarResources()[gpuName],
		ReqCPU:   req.GetMilliCPU(), ReqMemory: req.GetMemory(), ReqGPU: req.GetScalarResources()[gpuName],
		Pods: len(ni.GetPods()),
	}
}

// buildsOn counts the builds on the node, those assumed there included.
func buildsOn(ni fwk.NodeInfo) int {
	builds := 0
	for _, pi := range ni.GetPods() {
		if ClassOf(pi.GetPod()) == berthv1alpha1.ClassBuild {
			builds++
		}
	}
	return builds
}

var gpuName = corev1.ResourceName("nvidia.com/gpu")

// nodeMemo remembers, per NodeInfo of the scheduler's snapshot, what the
// plugin reads of its node beyond the snapshot's sums: whether it is a GPU
// node (Decider.IsGPU) and how many builds it runs. The filter asks for
// every node in every cycle; reading a node's labels there (memory no other
// plugin of the cycle touches) cost as much as the stock taint filter, and
// counting a dense node's builds walks its hundred Pods.
//
// An answer holds while the NodeInfo holds the same Node object (the
// scheduler never changes one in place: an update brings a new one) and,
// for builds, the same generation (it changes with every Pod added, bound
// or assumed, or removed). So only a node that changed since the last cycle
// is read again. The memo is emptied after memoLimit answers are stored, so
// that NodeInfos the scheduler dropped do not pile up.
type nodeMemo struct {
	m      sync.Map // fwk.NodeInfo → *nodeFacts
	stores atomic.Int64
}

// nodeFacts are what the memo knows of one NodeInfo. They are never
// changed once stored.
type nodeFacts struct {
	node *corev1.Node
	gpu  bool
	// generation is the NodeInfo's when builds was counted, or -1.
	generation int64
	builds     int
}

// memoLimit bounds the memo: a few times the nodes of a large cluster.
const memoLimit = 1 << 14

// facts returns whether the node is a GPU node and, when withBuilds, the
// builds on it (the Pods assumed there included).
func (m *nodeMemo) facts(d *Decider, ni fwk.NodeInfo, withBuilds bool) (gpu bool, builds int) {
	node := ni.Node()
	v, _ := m.m.Load(ni)
	old, _ := v.(*nodeFacts)
	if old != nil && old.node != node {
		old = nil
	}
	if old != nil && (!withBuilds || old.generation == ni.GetGeneration()) {
		return old.gpu, old.builds
	}
	f := &nodeFacts{node: node, generation: -1}
	if old != nil {
		f.gpu = old.gpu
	} else {
		f.gpu = d.IsGPU(node)
	}
	if withBuilds {
		f.generation, f.builds = ni.GetGeneration(), buildsOn(ni)
	}
	if m.stores.Add(1)%memoLimit == 0 {
		m.m.Clear()
	}
	m.m.Store(ni, f)
	return f.gpu, f.builds
}
