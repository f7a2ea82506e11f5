package placement

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	keys "berth.dev/berth/pkg/placement"
	"berth.dev/berth/pkg/requests"
	"berth.dev/berth/plugins/config"
)

// MaxScore is the best score; the scheduler framework and the extender
// rescale it.
const MaxScore = 100

// NodeState is what a decision knows of a node: its capacity and what the
// Pods bound to it (or assumed there) hold. The plugin fills it from the
// scheduler's snapshot, the extender from its informer cache.
type NodeState struct {
	Node *corev1.Node
	// Allocatable and Requested in milli-CPU, bytes and GPUs.
	AllocCPU, AllocMemory, AllocEphemeral, AllocGPU int64
	ReqCPU, ReqMemory, ReqGPU                       int64
	// Pods counts the Pods on the node; Builds those of class build. The
	// plugin counts Builds only when it places a build, the one class whose
	// decision reads it.
	Pods, Builds int
}

// Request is what a Pod asks for, in the units of NodeState.
type Request struct {
	CPU, Memory, GPU int64
}

// Decider holds the plugin's configuration.
type Decider struct {
	Keys             keys.Keys
	TargetPercent    int64
	ScratchBytes     int64
	EmptyNodeScore   int64
	buildCapacityKey string
}

// NewDecider validates args and returns a Decider.
func NewDecider(args *config.PlacementArgs) (*Decider, error) {
	config.SetDefaults(args)
	if err := config.Validate(args); err != nil {
		return nil, err
	}
	k, err := args.ResolvedKeys()
	if err != nil {
		return nil, err
	}
	return &Decider{
		Keys: k, TargetPercent: int64(args.WorkspaceTargetPercent), ScratchBytes: args.BuildScratchBytes,
		EmptyNodeScore: int64(args.EmptyNodeScore), buildCapacityKey: k.BuildCapacity,
	}, nil
}

// ClassOf returns a Pod's berth class, or "" for a Pod berth does not manage.
func ClassOf(pod *corev1.Pod) berthv1alpha1.Class {
	c, _ := berthv1alpha1.ParseClass(pod.Labels[berthv1alpha1.LabelClass])
	return c
}

// Filter returns why the Pod must not go to the node, or "" when it may. It
// only adds rules that agree with what the webhook writes into the Pod spec,
// so that an autoscaler, which reads only the spec, never launches a node
// for a Pod berth then refuses, nor counts on a node berth refuses: GPU
// nodes take inference only (their taint), and a node whose build-capacity
// label is set takes no more builds than it says. A build's disk is its
// scratch's ephemeral-storage request, which the stock resource fit checks
// as an autoscaler does.
func (d *Decider) Filter(pod *corev1.Pod, class berthv1alpha1.Class, n *NodeState) string {
	return d.filter(pod, class, n, d.IsGPU(n.Node))
}

// IsGPU reports whether the node is a GPU node: it has the preset's GPU
// label.
func (d *Decider) IsGPU(node *corev1.Node) bool { return d.Keys.GPU.Matches(node.Labels) }

// filter is Filter with the node's IsGPU already known.
func (d *Decider) filter(pod *corev1.Pod, class berthv1alpha1.Class, n *NodeState, gpu bool) string {
	if gpu && class != berthv1alpha1.ClassInference && !daemon(pod) {
		return fmt.Sprintf("node %s is a GPU node, kept for inference; this Pod is not berth.dev/class=inference", n.Node.Name)
	}
	if class == berthv1alpha1.ClassBuild {
		if c, ok := d.labelledBuildCapacity(n); ok && n.Builds >= c {
			return fmt.Sprintf("node %s runs %d builds, its disk's build capacity (label %s)", n.Node.Name, c, d.buildCapacityKey)
		}
	}
	return ""
}

// labelledBuildCapacity is the node's build-capacity label, when it has a
// valid one.
func (d *Decider) labelledBuildCapacity(n *NodeState) (int, bool) {
	if d.buildCapacityKey == "" {
		return 0, false
	}
	v, ok := n.Node.Labels[d.buildCapacityKey]
	if !ok {
		return 0, false
	}
	c, err := strconv.Atoi(v)
	return c, err == nil && c >= 0
}

// BuildCapacity is how many builds a node's disk is expected to hold, to
// spread builds by: its build-capacity label, else allocatable ephemeral
// storage over one build's expected scratch use.
func (d *Decider) BuildCapacity(n *NodeState) int {
	if c, ok := d.labelledBuildCapacity(n); ok {
		return c
	}
	if d.ScratchBytes <= 0 {
		return int(^uint(0) >> 1)
	}
	return int(n.AllocEphemeral / d.ScratchBytes)
}

// Score ranks the node for the Pod, 0 to MaxScore:
//   - workspaces pack toward the target utilization: the nearer the node
//     comes to it, the better, and past it the score falls, so headroom is
//     kept and whole nodes still empty out;
//   - builds spread by concurrent builds per node, but a node already up
//     beats an empty one;
//   - inference packs GPUs;
//   - other Pods score the same everywhere.
func (d *Decider) Score(class berthv1alpha1.Class, req Request, n *NodeState) int64 {
	switch class {
	case berthv1alpha1.ClassWorkspace:
		if n.AllocCPU == 0 || n.AllocMemory == 0 {
			return 0
		}
		u := max(percent(n.ReqCPU+req.CPU, n.AllocCPU), percent(n.ReqMemory+req.Memory, n.AllocMemory))
		return d.towardTarget(u)
	case berthv1alpha1.ClassBuild:
		if n.Pods == 0 {
			return d.EmptyNodeScore
		}
		c := int64(d.BuildCapacity(n))
		if c <= 0 {
			return 0
		}
		free := max(0, c-int64(n.Builds))
		return d.EmptyNodeScore + (MaxScore-d.EmptyNodeScore)*free/c
	case berthv1alpha1.ClassInference:
		if n.AllocGPU == 0 {
			return 0
		}
		return min(MaxScore, percent(n.ReqGPU+req.GPU, n.AllocGPU))
	}
	return 0
}

// towardTarget maps utilization u (percent) to a score: rising to MaxScore at
// the target, then falling to half of it at 100%.
func (d *Decider) towardTarget(u int64) int64 {
	t := d.TargetPercent
	if u <= t {
		return MaxScore * u / t
	}
	if u >= 100 || t >= 100 {
		return MaxScore / 2
	}
	return MaxScore - (MaxScore/2)*(u-t)/(100-t)
}

func percent(a, b int64) int64 {
	if b <= 0 {
		return 0
	}
	return a * 100 / b
}

// PodRequest is a Pod's effective request in NodeState units, from berth's
// one accounting (pkg/requests): sidecars add to the containers, a plain
// init container counts while it runs alone, Pod-level resources replace the
// containers' sum.
func PodRequest(pod *corev1.Pod) Request {
	r := requests.Of(&pod.Spec)
	g := r[keys.GPUResource]
	return Request{CPU: r.Cpu().MilliValue(), Memory: r.Memory().Value(), GPU: g.Value()}
}

func daemon(pod *corev1.Pod) bool {
	for _, o := range pod.OwnerReferences {
		if o.Kind == "DaemonSet" && o.Controller != nil && *o.Controller {
			return true
		}
	}
	return false
}

// StateOf builds a NodeState from a node and the Pods on it.
func StateOf(node *corev1.Node, pods []*corev1.Pod) *NodeState {
	n := &NodeState{
		Node:           node,
		AllocCPU:       node.Status.Allocatable.Cpu().MilliValue(),
		AllocMemory:    node.Status.Allocatable.Memory().Value(),
		AllocEphemeral: node.Status.Allocatable.StorageEphemeral().Value(),
	}
	if q, ok := node.Status.Allocatable[keys.GPUResource]; ok {
		n.AllocGPU = q.Value()
	}
	for _, p := range pods {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		r := PodRequest(p)
		n.ReqCPU += r.CPU
		n.ReqMemory += r.Memory
		n.ReqGPU += r.GPU
		n.Pods++
		if ClassOf(p) == berthv1alpha1.ClassBuild {
			n.Builds++
		}
	}
	return n
}
