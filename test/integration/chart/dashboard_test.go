package chart

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/test/framework"
)

// The chart ships berth's Grafana dashboard as a ConfigMap the dashboard
// sidecar picks up. It is valid JSON, and every metric it queries is one
// berth registers: a renamed metric would leave a panel silently empty.
func TestChartShipsTheDashboard(t *testing.T) {
	env := framework.Cluster(t)
	root, err := localcluster.RepoRoot(".")
	require.NoError(t, err)
	chart := filepath.Join(root, "charts", "berth")

	for _, o := range render(t, env, chart) {
		assert.NotEqual(t, "berth-dashboard", o.GetName(), "off by default")
	}
	var data string
	for _, o := range render(t, env, chart, "--set", "grafanaDashboard.enabled=true", "--set", "grafanaDashboard.namespace=monitoring") {
		if o.GetKind() == "ConfigMap" && o.GetName() == "berth-dashboard" {
			assert.Equal(t, "monitoring", o.GetNamespace())
			assert.Equal(t, "1", o.GetLabels()["grafana_dashboard"])
			data, _, _ = unstructured.NestedString(o.Object, "data", "berth.json")
		}
	}
	require.NotEmpty(t, data, "the dashboard ConfigMap")
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal([]byte(data), &dash))
	assert.Equal(t, "berth-overview", dash.UID)

	registered := registeredMetrics(t, root)
	name := regexp.MustCompile(`berth_[a-z_]+`)
	queried := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		require.NotEmpty(t, p.Targets, "panel %q queries something", p.Title)
		for _, tg := range p.Targets {
			for _, m := range name.FindAllString(tg.Expr, -1) {
				queried++
				base := strings.TrimSuffix(m, "_bucket")
				assert.True(t, registered[base], "panel %q queries %s, which berth does not register", p.Title, m)
			}
		}
	}
	assert.Greater(t, queried, 10)
}

// registeredMetrics are the metric names berth's Go code declares
// (Name: "berth_...").
func registeredMetrics(t *testing.T, root string) map[string]bool {
	t.Helper()
	decl := regexp.MustCompile(`Name:\s*"(berth_[a-z_]+)"`)
	out := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "test" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
			out[m[1]] = true
		}
		return nil
	})
	require.NoError(t, err)
	require.NotEmpty(t, out)
	return out
}
