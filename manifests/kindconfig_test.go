package manifests_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	kindv1alpha4 "sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"

	"berth.dev/berth/pkg/localcluster"
)

// TestKindConfigMirrorsPools checks that kind-config.yaml, loaded with kind's
// own config types, has one worker per pool carrying the pool's labels and
// taints.
func TestKindConfigMirrorsPools(t *testing.T) {
	data, err := os.ReadFile("../kind-config.yaml")
	require.NoError(t, err)
	var cfg kindv1alpha4.Cluster
	require.NoError(t, yaml.UnmarshalStrict(data, &cfg), "kind-config.yaml must load with kind's v1alpha4 types")
	assert.Equal(t, "Cluster", cfg.Kind)
	assert.Equal(t, "kind.x-k8s.io/v1alpha4", cfg.APIVersion)

	pools, err := localcluster.DefaultPools()
	require.NoError(t, err)

	workers := map[string]kindv1alpha4.Node{}
	for _, n := range cfg.Nodes {
		if n.Role != kindv1alpha4.WorkerRole {
			continue
		}
		pool := n.Labels[localcluster.LabelPool]
		require.NotEmpty(t, pool, "every kind worker needs the %s label", localcluster.LabelPool)
		workers[pool] = n
	}
	require.ElementsMatch(t, pools.Names(), keys(workers), "kind workers and pools differ")

	for _, p := range pools.Pools {
		t.Run(p.Name, func(t *testing.T) {
			n := workers[p.Name]
			for k, v := range p.Labels {
				assert.Equal(t, v, n.Labels[k], "label %s", k)
			}
			assert.Equal(t, p.InstanceType, n.Labels[corev1.LabelInstanceTypeStable])
			assert.ElementsMatch(t, p.Taints, kindTaints(t, n), "taints")
		})
	}
}

// kindTaints reads the taints a worker registers with, from its kubeadm
// JoinConfiguration patches.
func kindTaints(t *testing.T, n kindv1alpha4.Node) []corev1.Taint {
	var taints []corev1.Taint
	for _, patch := range n.KubeadmConfigPatches {
		var join struct {
			Kind             string `json:"kind"`
			NodeRegistration struct {
				Taints []corev1.Taint `json:"taints"`
			} `json:"nodeRegistration"`
		}
		require.NoError(t, yaml.Unmarshal([]byte(patch), &join))
		if join.Kind == "JoinConfiguration" {
			taints = append(taints, join.NodeRegistration.Taints...)
		}
	}
	return taints
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
