package placement

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// podsByNode indexes Pods by spec.nodeName.
const podsByNode = "spec.nodeName"

// InformerNodes is the extender's NodeSource: informers on Nodes and on the
// Pods that are bound and not finished, kept by node. Reads come from memory.
type InformerNodes struct {
	nodes cache.SharedIndexInformer
	pods  cache.SharedIndexInformer
}

var _ NodeSource = &InformerNodes{}

// NewInformerNodes sets up the informers; Start runs them.
func NewInformerNodes(cs kubernetes.Interface) (*InformerNodes, error) {
	// Like kube-scheduler, watch only Pods that hold resources: bound and
	// neither succeeded nor failed.
	selector := fields.AndSelectors(
		fields.OneTermNotEqualSelector("spec.nodeName", ""),
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodSucceeded)),
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodFailed)),
	).String()
	pods := coreinformers.NewFilteredPodInformer(cs, metav1.NamespaceAll, 0,
		cache.Indexers{podsByNode: func(obj any) ([]string, error) {
			return []string{obj.(*corev1.Pod).Spec.NodeName}, nil
		}},
		func(o *metav1.ListOptions) { o.FieldSelector = selector })
	nodes := coreinformers.NewNodeInformer(cs, 0, cache.Indexers{})
	for _, inf := range []cache.SharedIndexInformer{pods, nodes} {
		if err := inf.SetTransform(dropManagedFields); err != nil {
			return nil, fmt.Errorf("set informer transform: %w", err)
		}
	}
	return &InformerNodes{nodes: nodes, pods: pods}, nil
}

// dropManagedFields keeps the cache small: decisions never read them.
func dropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.ObjectMetaAccessor); ok {
		m.GetObjectMeta().SetManagedFields(nil)
	}
	return obj, nil
}

// Start runs the informers until ctx ends and waits, at most timeout, for
// their first list.
func (s *InformerNodes) Start(ctx context.Context, timeout time.Duration) error {
	go s.nodes.RunWithContext(ctx)
	go s.pods.RunWithContext(ctx)
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), s.nodes.HasSynced, s.pods.HasSynced) {
		return fmt.Errorf("sync the node and pod caches: %w", sctx.Err())
	}
	return nil
}

// Synced reports whether the first list of Nodes and Pods is in.
func (s *InformerNodes) Synced() bool { return s.nodes.HasSynced() && s.pods.HasSynced() }

// Node returns the named node from the cache.
func (s *InformerNodes) Node(name string) *corev1.Node {
	obj, ok, err := s.nodes.GetStore().GetByKey(name)
	if err != nil || !ok {
		return nil
	}
	return obj.(*corev1.Node)
}

// PodsOn returns the cached Pods bound to the named node.
func (s *InformerNodes) PodsOn(name string) []*corev1.Pod {
	objs, err := s.pods.GetIndexer().ByIndex(podsByNode, name)
	if err != nil {
		return nil
	}
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*corev1.Pod))
	}
	return out
}

// StaticNodes is a NodeSource over fixed nodes and Pods, for tests: Pods are
// kept by their spec.nodeName.
type StaticNodes struct {
	nodes map[string]*corev1.Node
	pods  map[string][]*corev1.Pod
}

var _ NodeSource = &StaticNodes{}

// NewStaticNodes returns a NodeSource holding nodes and the Pods bound to
// them.
func NewStaticNodes(nodes []*corev1.Node, pods []*corev1.Pod) *StaticNodes {
	s := &StaticNodes{nodes: map[string]*corev1.Node{}, pods: map[string][]*corev1.Pod{}}
	for _, n := range nodes {
		s.nodes[n.Name] = n
	}
	for _, p := range pods {
		s.pods[p.Spec.NodeName] = append(s.pods[p.Spec.NodeName], p)
	}
	return s
}

// Node returns the named node, or nil.
func (s *StaticNodes) Node(name string) *corev1.Node { return s.nodes[name] }

// PodsOn returns the Pods bound to the named node.
func (s *StaticNodes) PodsOn(name string) []*corev1.Pod { return s.pods[name] }
