package manifests_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"berth.dev/berth/pkg/localcluster"
)

// TestKarpenterMirrorsPools checks that Karpenter's NodePools launch the
// local cluster's pools: one NodePool per pool, with its labels, taints and
// instance type, and that instance-types.json gives that type the pool's
// shape and prices.
func TestKarpenterMirrorsPools(t *testing.T) {
	pools, err := localcluster.DefaultPools()
	require.NoError(t, err)

	data, err := os.ReadFile("karpenter/instance-types.json")
	require.NoError(t, err)
	var types []struct {
		Name      string              `json:"name"`
		Resources corev1.ResourceList `json:"resources"`
		Offerings []struct {
			Price        float64
			Requirements []corev1.NodeSelectorRequirement
		} `json:"offerings"`
	}
	require.NoError(t, json.Unmarshal(data, &types))

	type nodePool struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Template struct {
				Metadata struct {
					Labels map[string]string `json:"labels"`
				} `json:"metadata"`
				Spec struct {
					Requirements []corev1.NodeSelectorRequirement `json:"requirements"`
					Taints       []corev1.Taint                   `json:"taints"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	raw, err := os.ReadFile("karpenter/nodepools.yaml")
	require.NoError(t, err)
	nodePools := map[string]nodePool{}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		var np nodePool
		if err := dec.Decode(&np); errors.Is(err, io.EOF) {
			break
		} else {
			require.NoError(t, err)
		}
		if np.Kind == "NodePool" {
			nodePools[np.Metadata.Name] = np
		}
	}
	require.ElementsMatch(t, pools.Names(), keys(nodePools), "NodePools and pools differ")

	for _, name := range pools.Names() {
		pool, _ := pools.Get(name)
		np := nodePools[name]
		for k, v := range pool.Labels {
			assert.Equal(t, v, np.Spec.Template.Metadata.Labels[k], "NodePool %s label %s", name, k)
		}
		assert.Equal(t, name, np.Spec.Template.Metadata.Labels[localcluster.LabelPool], "NodePool %s", name)
		assert.ElementsMatch(t, pool.Taints, np.Spec.Template.Spec.Taints, "NodePool %s taints", name)

		var instanceTypes, capacityTypes []string
		for _, r := range np.Spec.Template.Spec.Requirements {
			switch r.Key {
			case corev1.LabelInstanceTypeStable:
				instanceTypes = r.Values
			case "karpenter.sh/capacity-type":
				capacityTypes = r.Values
			}
		}
		require.Equal(t, []string{pool.InstanceType}, instanceTypes, "NodePool %s launches the pool's instance type only", name)
		require.Len(t, capacityTypes, 1, "NodePool %s launches one capacity type", name)

		found := false
		for _, it := range types {
			if it.Name != pool.InstanceType {
				continue
			}
			found = true
			for res, q := range pool.Capacity {
				want, got := resource.MustParse(q), it.Resources[res]
				assert.Zero(t, want.Cmp(got), "%s %s: pool %s, instance type %s", it.Name, res, q, got.String())
			}
			prices := map[string]float64{}
			for _, o := range it.Offerings {
				for _, r := range o.Requirements {
					if r.Key == "karpenter.sh/capacity-type" {
						prices[r.Values[0]] = o.Price
					}
				}
			}
			assert.Equal(t, map[string]float64{"spot": pool.Price.Spot, "on-demand": pool.Price.OnDemand}, prices, "%s prices", it.Name)
		}
		assert.True(t, found, "instance-types.json has %s", pool.InstanceType)
	}
}
