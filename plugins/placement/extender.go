package placement

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// NodeSource is where the extender reads nodes and the Pods bound to them.
// It must answer from memory: the extender makes no API call per request.
type NodeSource interface {
	// Node returns the named node, or nil when it is not known (yet).
	Node(name string) *corev1.Node
	// PodsOn returns the Pods bound to the named node.
	PodsOn(name string) []*corev1.Pod
}

// Extender serves BerthPlacement as an HTTP scheduler extender for a stock
// kube-scheduler. Its decisions are the plugin's: the same Decider filters
// with the same reasons and scores, scaled from 0-MaxScore to the extender's
// 0-10.
//
// Unlike the plugin it does not see the Pods the scheduler has assumed but
// not yet bound, only those its cache has seen bound; a burst of Pods may
// therefore be placed as if the last few were not there yet.
type Extender struct {
	d     *Decider
	nodes NodeSource
}

// NewExtender returns an extender deciding with d over the nodes of src.
func NewExtender(d *Decider, src NodeSource) *Extender {
	return &Extender{d: d, nodes: src}
}

// candidate is a node the scheduler asks about: its name, and the node
// object when the scheduler sent it (nodeCacheCapable false).
type candidate struct {
	name string
	node *corev1.Node
}

func candidates(args *extenderv1.ExtenderArgs) []candidate {
	if args.NodeNames != nil {
		out := make([]candidate, len(*args.NodeNames))
		for i, n := range *args.NodeNames {
			out[i] = candidate{name: n}
		}
		return out
	}
	out := make([]candidate, len(args.Nodes.Items))
	for i := range args.Nodes.Items {
		out[i] = candidate{name: args.Nodes.Items[i].Name, node: &args.Nodes.Items[i]}
	}
	return out
}

// state builds the NodeState of a candidate: the node the scheduler sent or
// the cached one, and the cached Pods on it. It is nil for a node the cache
// does not know.
func (e *Extender) state(c candidate) *NodeState {
	node := c.node
	if node == nil {
		node = e.nodes.Node(c.name)
	}
	if node == nil {
		return nil
	}
	return StateOf(node, e.nodes.PodsOn(c.name))
}

// Filter answers a filter call. args must have passed ValidateArgs. It
// returns the nodes the Pod may go to in the form they were asked in (names
// or node objects), and a reason for every other node.
func (e *Extender) Filter(args *extenderv1.ExtenderArgs) *extenderv1.ExtenderFilterResult {
	class := ClassOf(args.Pod)
	res := &extenderv1.ExtenderFilterResult{FailedNodes: extenderv1.FailedNodesMap{}}
	var names []string
	var nodes []corev1.Node
	for _, c := range candidates(args) {
		why := ""
		if n := e.state(c); n == nil {
			why = fmt.Sprintf("node %s is not in berth-extender's cache yet", c.name)
		} else {
			why = e.d.Filter(args.Pod, class, n)
		}
		switch {
		case why != "":
			res.FailedNodes[c.name] = why
		case c.node != nil:
			nodes = append(nodes, *c.node)
		default:
			names = append(names, c.name)
		}
	}
	if args.NodeNames != nil {
		if names == nil {
			names = []string{}
		}
		res.NodeNames = &names
	} else {
		res.Nodes = &corev1.NodeList{Items: nodes}
	}
	return res
}

// Prioritize answers a prioritize call. args must have passed ValidateArgs.
// Pods without a berth class score 0 everywhere, like the plugin, which
// skips them; a node the cache does not know scores 0.
func (e *Extender) Prioritize(args *extenderv1.ExtenderArgs) extenderv1.HostPriorityList {
	class := ClassOf(args.Pod)
	cs := candidates(args)
	out := make(extenderv1.HostPriorityList, len(cs))
	req := PodRequest(args.Pod)
	for i, c := range cs {
		out[i] = extenderv1.HostPriority{Host: c.name}
		if class == "" {
			continue
		}
		if n := e.state(c); n != nil {
			out[i].Score = ExtenderScore(e.d.Score(class, req, n))
		}
	}
	return out
}

// ExtenderScore scales a score of 0 to MaxScore to the extender's 0 to
// MaxExtenderPriority, rounding to the nearest.
func ExtenderScore(s int64) int64 {
	s = min(max(s, 0), MaxScore)
	return (s*extenderv1.MaxExtenderPriority + MaxScore/2) / MaxScore
}

// ValidateArgs checks what the scheduler sent; the error names the field and
// says what it must hold. ExtenderArgs has no JSON tags, so the fields are
// named as they are sent, capitalized.
//
//nolint:staticcheck // ST1005: the messages start with the wire field names, Pod and Nodes.
func ValidateArgs(args *extenderv1.ExtenderArgs) error {
	switch {
	case args.Pod == nil:
		return fmt.Errorf("Pod: required, the Pod being scheduled")
	case args.NodeNames == nil && args.Nodes == nil:
		return fmt.Errorf("NodeNames or Nodes: one is required (NodeNames when the extender is nodeCacheCapable)")
	case args.NodeNames != nil && args.Nodes != nil:
		return fmt.Errorf("NodeNames and Nodes: send only one of them")
	}
	if args.NodeNames != nil {
		for i, n := range *args.NodeNames {
			if n == "" {
				return fmt.Errorf("NodeNames[%d]: must be a node name, not empty", i)
			}
		}
		return nil
	}
	for i := range args.Nodes.Items {
		if args.Nodes.Items[i].Name == "" {
			return fmt.Errorf("Nodes.items[%d].metadata.name: required", i)
		}
	}
	return nil
}
