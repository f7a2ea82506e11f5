// Package autoscaling runs berth with a real autoscaler: Karpenter, with its
// kwok provider, launches the local cluster's nodes from the NodePools of
// manifests/karpenter, for Pods berth's webhooks admit and berth-scheduler
// places, and removes the nodes berth empties.
package autoscaling

import (
	"testing"

	"berth.dev/berth/test/framework"
)

// The cluster starts with no worker nodes: Karpenter launches them all.
func TestMain(m *testing.M) {
	framework.Main(m, framework.WithPoolSizes(map[string]int{"spot-ssd": 0, "on-demand": 0, "gpu": 0}))
}
