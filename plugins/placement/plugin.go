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
	d *Decider
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
	class := ClassOf(pod)
	n := stateOf(ni, class)
	if why := p.d.Filter(pod, class, &n); why != "" {
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
	n := stateOf(ni, s.class)
	return p.d.Score(s.class, s.req, &n), nil
}

// ScoreExtensions is nil: scores are already 0 to MaxScore.
func (p *Plugin) ScoreExtensions() fwk.ScoreExtensions { return nil }

// stateOf reads a NodeState from the scheduler's snapshot, for placing a
// Pod of class. It runs for every node in every cycle, so it reads only the
// snapshot's sums and allocates nothing. Only a build needs the node's
// builds, so they are counted only for one. The snapshot holds the Pods
// assumed on the node but not yet bound, so they count too.
func stateOf(ni fwk.NodeInfo, class berthv1alpha1.Class) NodeState {
	alloc, req := ni.GetAllocatable(), ni.GetRequested()
	pods := ni.GetPods()
	n := NodeState{
		Node:     ni.Node(),
		AllocCPU: alloc.GetMilliCPU(), AllocMemory: alloc.GetMemory(), AllocEphemeral: alloc.GetEphemeralStorage(),
		AllocGPU: alloc.GetScalarResources()[gpuName],
		ReqCPU:   req.GetMilliCPU(), ReqMemory: req.GetMemory(), ReqGPU: req.GetScalarResources()[gpuName],
		Pods: len(pods),
	}
	if class == berthv1alpha1.ClassBuild {
		for _, pi := range pods {
			if ClassOf(pi.GetPod()) == berthv1alpha1.ClassBuild {
				n.Builds++
			}
		}
	}
	return n
}

var gpuName = corev1.ResourceName("nvidia.com/gpu")
