package placement

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Selector is a node label requirement: Key=Value, or Key present when Value
// is empty.
type Selector struct {
	Key   string `json:"key"`
	Value string `json:"value,omitempty"`
}

// Matches reports whether a node's labels satisfy the selector.
func (s Selector) Matches(labels map[string]string) bool {
	v, ok := labels[s.Key]
	if !ok {
		return false
	}
	return s.Value == "" || v == s.Value
}

// Requirement is the selector as a node selector requirement. negate gives
// the requirement of nodes that do not match.
func (s Selector) Requirement(negate bool) corev1.NodeSelectorRequirement {
	switch {
	case s.Value == "" && !negate:
		return corev1.NodeSelectorRequirement{Key: s.Key, Operator: corev1.NodeSelectorOpExists}
	case s.Value == "":
		return corev1.NodeSelectorRequirement{Key: s.Key, Operator: corev1.NodeSelectorOpDoesNotExist}
	case !negate:
		return corev1.NodeSelectorRequirement{Key: s.Key, Operator: corev1.NodeSelectorOpIn, Values: []string{s.Value}}
	default:
		return corev1.NodeSelectorRequirement{Key: s.Key, Operator: corev1.NodeSelectorOpNotIn, Values: []string{s.Value}}
	}
}

// Keys are the node labels and taints of one cloud or autoscaler.
type Keys struct {
	// Spot selects spot (preemptible) nodes.
	Spot Selector `json:"spot"`
	// SpotTaint is the taint spot nodes carry, if any; workloads allowed on
	// spot get a toleration for it.
	SpotTaint *corev1.Taint `json:"spotTaint,omitempty"`
	// LocalSSD selects nodes whose ephemeral storage is a local SSD.
	LocalSSD Selector `json:"localSSD"`
	// GPU selects GPU nodes.
	GPU Selector `json:"gpu"`
	// GPUTaint is the taint GPU nodes carry; inference tolerates it.
	GPUTaint *corev1.Taint `json:"gpuTaint,omitempty"`
	// GPUProduct is the node label naming the GPU model.
	GPUProduct string `json:"gpuProduct"`
	// BuildCapacity, when set, is a node label giving how many concurrent
	// builds the node's disk holds.
	BuildCapacity string `json:"buildCapacity,omitempty"`
}

// GPUResource is the extended resource of NVIDIA GPUs.
const GPUResource corev1.ResourceName = "nvidia.com/gpu"

// The presets.
const (
	PresetAKS       = "aks"
	PresetEKS       = "eks"
	PresetGKE       = "gke"
	PresetKarpenter = "karpenter"
)

var (
	nvidiaGPU      = Selector{Key: "nvidia.com/gpu.present", Value: "true"}
	nvidiaGPUTaint = &corev1.Taint{Key: "nvidia.com/gpu", Effect: corev1.TaintEffectNoSchedule}
	berthLocalSSD  = Selector{Key: "berth.dev/local-ssd", Value: "true"}
	nvidiaProduct  = "nvidia.com/gpu.product"
)

var presets = map[string]Keys{
	PresetAKS: {
		Spot:          Selector{Key: "kubernetes.azure.com/scalesetpriority", Value: "spot"},
		SpotTaint:     &corev1.Taint{Key: "kubernetes.azure.com/scalesetpriority", Value: "spot", Effect: corev1.TaintEffectNoSchedule},
		LocalSSD:      berthLocalSSD,
		GPU:           nvidiaGPU,
		GPUTaint:      nvidiaGPUTaint,
		GPUProduct:    nvidiaProduct,
		BuildCapacity: "berth.dev/build-capacity",
	},
	PresetEKS: {
		Spot:          Selector{Key: "eks.amazonaws.com/capacityType", Value: "SPOT"},
		LocalSSD:      berthLocalSSD,
		GPU:           nvidiaGPU,
		GPUTaint:      nvidiaGPUTaint,
		GPUProduct:    nvidiaProduct,
		BuildCapacity: "berth.dev/build-capacity",
	},
	PresetGKE: {
		Spot:          Selector{Key: "cloud.google.com/gke-spot", Value: "true"},
		SpotTaint:     &corev1.Taint{Key: "cloud.google.com/gke-spot", Value: "true", Effect: corev1.TaintEffectNoSchedule},
		LocalSSD:      Selector{Key: "cloud.google.com/gke-ephemeral-storage-local-ssd", Value: "true"},
		GPU:           Selector{Key: "cloud.google.com/gke-accelerator"},
		GPUTaint:      &corev1.Taint{Key: "nvidia.com/gpu", Value: "present", Effect: corev1.TaintEffectNoSchedule},
		GPUProduct:    "cloud.google.com/gke-accelerator",
		BuildCapacity: "berth.dev/build-capacity",
	},
	PresetKarpenter: {
		Spot:          Selector{Key: "karpenter.sh/capacity-type", Value: "spot"},
		LocalSSD:      Selector{Key: "karpenter.k8s.aws/instance-local-nvme"},
		GPU:           nvidiaGPU,
		GPUTaint:      nvidiaGPUTaint,
		GPUProduct:    nvidiaProduct,
		BuildCapacity: "berth.dev/build-capacity",
	},
}

// Preset returns the keys of a named preset.
func Preset(name string) (Keys, error) {
	k, ok := presets[strings.ToLower(name)]
	if !ok {
		return Keys{}, fmt.Errorf("placement preset %q is unknown; use one of %s", name, strings.Join(PresetNames(), ", "))
	}
	// Copy the taints so callers may change them.
	if k.SpotTaint != nil {
		t := *k.SpotTaint
		k.SpotTaint = &t
	}
	if k.GPUTaint != nil {
		t := *k.GPUTaint
		k.GPUTaint = &t
	}
	return k, nil
}

// PresetNames lists the presets, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Validate reports the first missing key, naming the field.
func (k Keys) Validate() error {
	for field, v := range map[string]string{"spot.key": k.Spot.Key, "localSSD.key": k.LocalSSD.Key, "gpu.key": k.GPU.Key} {
		if v == "" {
			return fmt.Errorf("placement %s is empty; pick a preset (%s) or set the key", field, strings.Join(PresetNames(), ", "))
		}
	}
	return nil
}

// Toleration tolerates a taint (any value, when the taint has none).
func Toleration(t *corev1.Taint) corev1.Toleration {
	if t.Value == "" {
		return corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOpExists, Effect: t.Effect}
	}
	return corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOpEqual, Value: t.Value, Effect: t.Effect}
}
