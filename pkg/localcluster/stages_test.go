package localcluster

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// The local cluster runs kwok's default node and Pod stages, and its
// pod-complete stage waits for the delay a Pod's annotation names.
func TestKwokStagesAreTheDefaultsWithARunForDelay(t *testing.T) {
	out, err := kwokStages()
	require.NoError(t, err)
	names := map[string]map[string]any{}
	for _, doc := range strings.Split(string(out), "\n---\n") {
		doc = strings.TrimPrefix(doc, "---\n")
		var s struct {
			Kind     string
			Metadata struct{ Name string }
			Spec     map[string]any
		}
		require.NoError(t, yaml.Unmarshal([]byte(doc), &s))
		require.Equal(t, "Stage", s.Kind)
		names[s.Metadata.Name] = s.Spec
	}
	for _, n := range []string{"node-initialize", "node-heartbeat-with-lease", "pod-ready", "pod-complete", "pod-delete"} {
		assert.Contains(t, names, n)
	}
	assert.Equal(t, map[string]any{
		"durationMilliseconds": float64(0),
		"durationFrom":         map[string]any{"expressionFrom": `.metadata.annotations["` + AnnotationRunFor + `"]`},
	}, names["pod-complete"]["delay"])
	assert.Nil(t, names["pod-ready"]["delay"], "Pods still start at once")
}
