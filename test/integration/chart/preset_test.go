package chart

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/test/framework"
)

// berth-scheduler reads nodes with the keys the webhook writes into Pods:
// the chart gives both manager.placementPreset. With another preset the
// plugin would look for GPU nodes and build capacity under other labels.
func TestChartGivesTheSchedulerTheManagersPreset(t *testing.T) {
	env := framework.Cluster(t)
	root, err := localcluster.RepoRoot(".")
	require.NoError(t, err)
	chart := filepath.Join(root, "charts", "berth")

	for _, preset := range []string{"aks", "gke", "karpenter"} {
		var presets []any
		for _, o := range render(t, env, chart, "--set", "manager.placementPreset="+preset, "--show-only", "templates/scheduler.yaml") {
			if o.GetKind() != "ConfigMap" {
				continue
			}
			data, _, _ := unstructured.NestedString(o.Object, "data", "config.yaml")
			var config struct {
				Profiles []struct {
					PluginConfig []struct {
						Name string         `json:"name"`
						Args map[string]any `json:"args"`
					} `json:"pluginConfig"`
				} `json:"profiles"`
			}
			require.NoError(t, yaml.Unmarshal([]byte(data), &config))
			for _, p := range config.Profiles {
				for _, pc := range p.PluginConfig {
					if pc.Name == "BerthPlacement" {
						presets = append(presets, pc.Args["preset"])
					}
				}
			}
		}
		assert.Equal(t, []any{preset}, presets, "BerthPlacement's preset with manager.placementPreset=%s", preset)
	}
}
