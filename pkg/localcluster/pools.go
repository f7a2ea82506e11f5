package localcluster

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Labels and annotations every fake node carries.
const (
	// LabelPool names the pool a node belongs to.
	LabelPool = "berth.dev/pool"
	// AnnotationKwokNode marks a node as kwok's to manage.
	AnnotationKwokNode = "kwok.x-k8s.io/node"
)

// zones are the availability zones fake nodes are spread over.
var zones = []string{"eastus-1", "eastus-2", "eastus-3"}

// Pool is one node pool: a count of identical nodes.
type Pool struct {
	Name         string                         `json:"name"`
	Count        int                            `json:"count"`
	InstanceType string                         `json:"instanceType"`
	Capacity     map[corev1.ResourceName]string `json:"capacity"`
	Labels       map[string]string              `json:"labels,omitempty"`
	Taints       []corev1.Taint                 `json:"taints,omitempty"`
	// Price is the hourly price of one node, for cost reports.
	Price Price `json:"price,omitempty"`

	capacity corev1.ResourceList // Capacity, parsed
}

// Price is a node's hourly price in US dollars, on demand and as spot.
type Price struct {
	OnDemand float64 `json:"onDemand,omitempty"`
	Spot     float64 `json:"spot,omitempty"`
}

// Pools is the content of manifests/local-cluster/pools.yaml.
type Pools struct {
	Pools []Pool `json:"pools"`
}

// ParsePools reads and checks a pools file.
func ParsePools(data []byte) (*Pools, error) {
	var p Pools
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		return nil, fmt.Errorf("parse pools: %w", err)
	}
	seen := map[string]bool{}
	for i := range p.Pools {
		pool := &p.Pools[i]
		if pool.Name == "" {
			return nil, fmt.Errorf("pools[%d].name is empty; give every pool a name", i)
		}
		if seen[pool.Name] {
			return nil, fmt.Errorf("pools[%d].name %q is used twice; pool names must be unique", i, pool.Name)
		}
		seen[pool.Name] = true
		if pool.Price.OnDemand < 0 || pool.Price.Spot < 0 {
			return nil, fmt.Errorf("pools[%d].price is negative; use US dollars an hour, such as 1.25", i)
		}
		if pool.Count < 0 {
			return nil, fmt.Errorf("pools[%d].count %d is negative; use 0 or more", i, pool.Count)
		}
		pool.capacity = corev1.ResourceList{}
		for name, v := range pool.Capacity {
			q, err := resource.ParseQuantity(v)
			if err != nil {
				return nil, fmt.Errorf("pools[%d].capacity[%s] %q is not a quantity; use a value such as 16 or 64Gi: %w", i, name, v, err)
			}
			pool.capacity[name] = q
		}
		if _, ok := pool.capacity[corev1.ResourcePods]; !ok {
			pool.capacity[corev1.ResourcePods] = resource.MustParse("110")
		}
	}
	return &p, nil
}

// Get returns the named pool.
func (p *Pools) Get(name string) (*Pool, bool) {
	for i := range p.Pools {
		if p.Pools[i].Name == name {
			return &p.Pools[i], true
		}
	}
	return nil, false
}

// Names returns the pool names, sorted.
func (p *Pools) Names() []string {
	names := make([]string, 0, len(p.Pools))
	for _, pool := range p.Pools {
		names = append(names, pool.Name)
	}
	sort.Strings(names)
	return names
}

// NodeName is the name of the i-th node of a pool.
func (p *Pool) NodeName(i int) string { return fmt.Sprintf("%s-%04d", p.Name, i) }

// Node returns the i-th fake node of the pool: Ready, with the pool's labels,
// taints and capacity, in one of three zones.
// annotationResourceMetricsPath is metrics-server's per-node override of
// the kubelet's /metrics/resource path.
const annotationResourceMetricsPath = "metrics.k8s.io/resource-metrics-path"

func (p *Pool) Node(i int) *corev1.Node {
	name := p.NodeName(i)
	labels := map[string]string{
		corev1.LabelHostname:           name,
		corev1.LabelOSStable:           "linux",
		corev1.LabelArchStable:         "amd64",
		corev1.LabelInstanceTypeStable: p.InstanceType,
		corev1.LabelTopologyZone:       zones[i%len(zones)],
		corev1.LabelTopologyRegion:     "eastus",
		LabelPool:                      p.Name,
		"type":                         "kwok",
	}
	for k, v := range p.Labels {
		labels[k] = v
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:   name,
			Labels: labels,
			Annotations: map[string]string{
				AnnotationKwokNode: "fake",
				// Where metrics-server, when the cluster runs it, reads the
				// node's resource metrics: the kwok controller serves them
				// per node.
				annotationResourceMetricsPath: "/metrics/nodes/" + name + "/metrics/resource",
			},
		},
		Spec: corev1.NodeSpec{
			Taints: append([]corev1.Taint(nil), p.Taints...),
		},
		Status: corev1.NodeStatus{
			Capacity:    p.capacity.DeepCopy(),
			Allocatable: p.capacity.DeepCopy(),
			Phase:       corev1.NodeRunning,
			NodeInfo: corev1.NodeSystemInfo{
				Architecture:    "amd64",
				OperatingSystem: "linux",
				KubeletVersion:  "fake",
			},
		},
	}
}
