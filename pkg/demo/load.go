package demo

import (
	"fmt"
	"math"
	"math/rand"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/placement"
	"berth.dev/berth/pkg/testutil"
)

// The reference load of docs/design.md, at its high end.
const (
	Workspaces = 300
	Builds     = 50
	VLLM       = 8 // replicas of 2 GPUs
)

// ReferenceLoad returns the reference load of docs/design.md as labelled
// Pods: 300 workspaces and 50 builds of 1 or 2 CPU and 2 or 4 GiB, and 8 vLLM
// replicas of 2 GPUs. The same seed gives the same load.
func ReferenceLoad(seed int64) []*corev1.Pod {
	r := rand.New(rand.NewSource(seed))
	size := func() (string, string) {
		if r.Intn(2) == 0 {
			return "1", "2Gi"
		}
		return "2", "4Gi"
	}
	var out []*corev1.Pod
	for i := range Workspaces {
		cpu, mem := size()
		out = append(out, testutil.Pod(fmt.Sprintf("ws-%03d", i)).Class(berthv1alpha1.ClassWorkspace).
			User(fmt.Sprintf("dev%03d", i)).Workspace(fmt.Sprintf("ws-%03d", i)).
			Resource(corev1.ResourceCPU, cpu).Resource(corev1.ResourceMemory, mem).Obj())
	}
	for i := range Builds {
		cpu, mem := size()
		out = append(out, testutil.Pod(fmt.Sprintf("build-%02d", i)).Class(berthv1alpha1.ClassBuild).
			User(fmt.Sprintf("dev%03d", i)).Project(fmt.Sprintf("proj-%02d", i)).
			Resource(corev1.ResourceCPU, cpu).Resource(corev1.ResourceMemory, mem).Obj())
	}
	for i := range VLLM {
		out = append(out, testutil.Pod(fmt.Sprintf("vllm-%d", i)).Class(berthv1alpha1.ClassInference).
			Resource(corev1.ResourceCPU, "8").Resource(corev1.ResourceMemory, "64Gi").Resource(placement.GPUResource, "2").Obj())
	}
	return out
}

// AsJob wraps a build Pod into the Job a CI system would submit.
func AsJob(p *corev1.Pod) *batchv1.Job {
	b := testutil.Job(p.Name).Namespace(p.Namespace)
	for k, v := range p.Labels {
		b.Label(k, v)
	}
	j := b.Obj()
	j.Spec.Template.Spec.Containers[0].Resources = p.Spec.Containers[0].Resources
	return j
}

// LabelKind is a plain Pod's class, on a label berth does not read.
const LabelKind = "demo.berth.dev/kind"

// Plain strips a Pod of everything berth would read or write: the load as a
// cluster without berth runs it. Inference keeps the GPU toleration a platform
// team would have to add by hand.
func Plain(p *corev1.Pod, keys placement.Keys) *corev1.Pod {
	out := testutil.Pod(p.Name).Namespace(p.Namespace).Obj()
	out.Spec.Containers[0].Resources = p.Spec.Containers[0].Resources
	if p.Labels[berthv1alpha1.LabelClass] == string(berthv1alpha1.ClassInference) && keys.GPUTaint != nil {
		out.Spec.Tolerations = []corev1.Toleration{placement.Toleration(keys.GPUTaint)}
	}
	out.Labels = map[string]string{LabelKind: p.Labels[berthv1alpha1.LabelClass]}
	return out
}

// LowerBound is the fewest nodes of a pool the Pods fit on: the largest of
// their total CPU, memory and GPUs over one node's.
func LowerBound(pods []*corev1.Pod, pool *localcluster.Pool) int {
	if pool == nil || len(pods) == 0 {
		return 0
	}
	var cpu, mem, gpu int64
	for _, p := range pods {
		for _, c := range p.Spec.Containers {
			cpu += c.Resources.Requests.Cpu().MilliValue()
			mem += c.Resources.Requests.Memory().Value()
			g := c.Resources.Requests[placement.GPUResource]
			gpu += g.Value()
		}
	}
	n := pool.Node(0).Status.Allocatable
	need := math.Max(float64(cpu)/float64(n.Cpu().MilliValue()), float64(mem)/float64(n.Memory().Value()))
	if g := n[placement.GPUResource]; g.Value() > 0 {
		need = math.Max(need, float64(gpu)/float64(g.Value()))
	}
	return int(math.Ceil(need))
}
