package localcluster

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
)

func TestDefaultPoolsFitTheReferenceLoad(t *testing.T) {
	pools, err := DefaultPools()
	require.NoError(t, err)
	assert.Equal(t, []string{"gpu", "on-demand", "spot-ssd"}, pools.Names())

	spot, ok := pools.Get("spot-ssd")
	require.True(t, ok)
	// docs/design.md: up to 300 workspaces of 2 CPU and 50 builds of 2 CPU.
	cpu := spot.Node(0).Status.Allocatable.Cpu().Value() * int64(spot.Count)
	assert.GreaterOrEqual(t, cpu, int64(300*2+50*2), "spot pool CPU must hold the reference load")

	gpu, _ := pools.Get("gpu")
	g := gpu.Node(0).Status.Allocatable[corev1.ResourceName("nvidia.com/gpu")]
	assert.Equal(t, int64(4), g.Value())
}

func TestPoolNode(t *testing.T) {
	pools, err := DefaultPools()
	require.NoError(t, err)
	spot, _ := pools.Get("spot-ssd")
	n := spot.Node(4)
	assert.Equal(t, "spot-ssd-0004", n.Name)
	assert.Equal(t, "spot-ssd", n.Labels[LabelPool])
	assert.Equal(t, "spot", n.Labels["kubernetes.azure.com/scalesetpriority"])
	assert.Equal(t, "true", n.Labels["berth.dev/local-ssd"])
	assert.Equal(t, "eastus-2", n.Labels[corev1.LabelTopologyZone])
	assert.Equal(t, "Standard_L16s_v3", n.Labels[corev1.LabelInstanceTypeStable])
	assert.Equal(t, []corev1.Taint{{Key: "kubernetes.azure.com/scalesetpriority", Value: "spot", Effect: corev1.TaintEffectNoSchedule}}, n.Spec.Taints)
	assert.Equal(t, "110", n.Status.Allocatable.Pods().String())
	// Nodes are independent copies.
	n.Labels["x"] = "y"
	assert.NotContains(t, spot.Node(4).Labels, "x")
}

func TestParsePoolsErrors(t *testing.T) {
	tests := map[string]string{
		"pools: [{count: 1}]":                       "pools[0].name is empty",
		"pools: [{name: a}, {name: a}]":             `pools[1].name "a" is used twice`,
		"pools: [{name: a, count: -1}]":             "pools[0].count -1 is negative",
		"pools: [{name: a, capacity: {cpu: lots}}]": `pools[0].capacity[cpu] "lots" is not a quantity`,
		"pools: [{name: a, colour: red}]":           "unknown field",
	}
	for in, want := range tests {
		_, err := ParsePools([]byte(in))
		require.Error(t, err, in)
		assert.Contains(t, err.Error(), want)
	}
}
