package placement

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"berth.dev/berth/plugins/config"
)

func readManifest(t *testing.T, name string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "manifests", "scheduler", name))
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, yaml.Unmarshal(raw, &m))
	return m
}

// TestExtenderManifestMatchesScheduler keeps the two shipped
// configurations deciding alike: the extender's profile is berth-scheduler's
// without BerthPlacement, the extender has BerthPlacement's weight, and
// berth-scheduler's args are berth-extender's defaults.
func TestExtenderManifestMatchesScheduler(t *testing.T) {
	sched, ext := readManifest(t, "berth-scheduler.yaml"), readManifest(t, "extender.yaml")
	sp := sched["profiles"].([]any)[0].(map[string]any)
	ep := ext["profiles"].([]any)[0].(map[string]any)
	assert.Equal(t, sp["schedulerName"], ep["schedulerName"], "the webhook writes one schedulerName")

	var weight any
	var args map[string]any
	mp := sp["plugins"].(map[string]any)["multiPoint"].(map[string]any)
	mp["enabled"] = slices.DeleteFunc(mp["enabled"].([]any), func(p any) bool {
		if p.(map[string]any)["name"] == Name {
			weight = p.(map[string]any)["weight"]
			return true
		}
		return false
	})
	sp["pluginConfig"] = slices.DeleteFunc(sp["pluginConfig"].([]any), func(p any) bool {
		if p.(map[string]any)["name"] == Name {
			args = p.(map[string]any)["args"].(map[string]any)
			return true
		}
		return false
	})
	assert.Equal(t, sp["plugins"], ep["plugins"], "plugins, berth-scheduler's without BerthPlacement")
	assert.Equal(t, sp["pluginConfig"], ep["pluginConfig"], "pluginConfig, berth-scheduler's without BerthPlacement")
	extenders := ext["extenders"].([]any)
	require.Len(t, extenders, 1)
	e := extenders[0].(map[string]any)
	assert.Equal(t, weight, e["weight"], "the extender's weight is BerthPlacement's")
	assert.Equal(t, true, e["nodeCacheCapable"])
	assert.Equal(t, false, e["ignorable"])

	raw, err := yaml.Marshal(args)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "args.yaml")
	require.NoError(t, os.WriteFile(path, raw, 0o600))
	shipped, err := config.LoadArgs(path)
	require.NoError(t, err)
	defaults, err := config.LoadArgs("")
	require.NoError(t, err)
	assert.Equal(t, defaults, shipped, "berth-extender's defaults are berth-scheduler's shipped args")
}
