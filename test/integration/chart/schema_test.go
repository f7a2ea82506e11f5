package chart

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/test/framework"
)

// TestChartSchemaRefusesBadValues: values.schema.json makes helm refuse a
// misspelt key, a wrong type or an unknown choice, naming the value, before
// anything is installed.
func TestChartSchemaRefusesBadValues(t *testing.T) {
	env := framework.Cluster(t)
	root, err := localcluster.RepoRoot(".")
	require.NoError(t, err)
	chart := filepath.Join(root, "charts", "berth")
	template := func(args ...string) (string, error) {
		_, stderr, err := helmResult(t, env, append([]string{"template", "berth", chart, "--kube-version", "v1.36.0"}, args...)...)
		return stderr, err
	}
	_, err = template()
	require.NoError(t, err, "the defaults pass")

	for _, tc := range []struct {
		name string
		set  []string
		want string
	}{
		{"a misspelt key", []string{"--set", "manager.replica=2"}, "at '/manager': additional properties 'replica' not allowed"},
		{"an unknown preset", []string{"--set", "manager.placementPreset=azure"}, "at '/manager/placementPreset': value must be one of 'aks', 'eks', 'gke', 'karpenter'"},
		{"an unknown webhook", []string{"--set-json", `manager.webhooks=["pod","deployment"]`}, "at '/manager/webhooks/1'"},
		{"an unknown controller", []string{"--set-json", `manager.controllers=["reaper"]`}, "at '/manager/controllers/0'"},
		{"no replicas", []string{"--set", "manager.replicas=0"}, "at '/manager/replicas'"},
		{"a duration without a unit", []string{"--set", "meter.interval=60"}, "at '/meter/interval': got number, want string"},
		{"a malformed duration", []string{"--set", "manager.blobGrantMaxTTL=1 hour"}, "at '/manager/blobGrantMaxTTL'"},
		{"a CPU quantity in words", []string{"--set", "manager.workspaceBusyCPU=some"}, "at '/manager/workspaceBusyCPU'"},
		{"a Secret name with capitals", []string{"--set", "meter.database.secretName=Berth_DB"}, "at '/meter/database/secretName'"},
		{"a price as text", []string{"--set-json", `meter.prices=[{"name":"spot-ssd","price":{"spot":"cheap"}}]`}, "at '/meter/prices/0/price/spot'"},
		{"an unknown pull policy", []string{"--set", "image.pullPolicy=Sometimes"}, "at '/image/pullPolicy'"},
		{"a port out of range", []string{"--set", "webhook.targetPort=70000"}, "at '/webhook/targetPort'"},
		{"an issuer of an unknown kind", []string{"--set", "webhook.certManager.issuerRef.kind=Vault"}, "at '/webhook/certManager/issuerRef/kind'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := template(tc.set...)
			require.Error(t, err, out)
			assert.Contains(t, out, "values don't meet the specifications of the schema")
			assert.Contains(t, out, tc.want)
		})
	}
}
