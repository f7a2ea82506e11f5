package chart

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/audit"
	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// TestChartRunsTheMeterWithItsOwnRights renders the chart with berth-meter
// on, creates its objects, and runs berth-meter with the Deployment's own
// arguments, as the chart's ServiceAccount, on the rendered prices. A
// labelled Pod that runs and is deleted is charged in PostgreSQL, a
// gateway's audit event is taken (the meter reviews its token and rights),
// and the meter is refused nothing.
func TestChartRunsTheMeterWithItsOwnRights(t *testing.T) {
	env := framework.Cluster(t)
	root, err := localcluster.RepoRoot(".")
	require.NoError(t, err)
	chart := filepath.Join(root, "charts", "berth")

	_, stderr, err := helmResult(t, env, "template", "berth", chart, "--kube-version", "v1.36.0", "--set", "meter.enabled=true")
	require.Error(t, err)
	assert.Contains(t, stderr, "meter.enabled needs meter.database.secretName")

	objs := render(t, env, chart, "--set", "meter.enabled=true", "--set", "meter.database.secretName=berth-db",
		"--set", "meter.interval=2s", "--set-json", `meter.prices=[{"name":"spot-ssd","price":{"onDemand":1.248,"spot":0.187}}]`,
		"--set", "meter.audit.keysSecretName=berth-audit-keys")
	ctx := t.Context()
	require.NoError(t, client.IgnoreAlreadyExists(env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})))
	var deploy, prices *unstructured.Unstructured
	byName := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		if o.GetLabels()["app.kubernetes.io/name"] != "berth-meter" {
			continue
		}
		byName[o.GetKind()+"/"+o.GetName()] = o
		require.NoError(t, client.IgnoreAlreadyExists(env.Client.Create(ctx, o)), "create %s %s", o.GetKind(), o.GetName())
		switch o.GetKind() {
		case "Deployment":
			deploy = o
		case "ConfigMap":
			prices = o
		}
	}
	require.NotNil(t, deploy)
	require.NotNil(t, prices)
	assert.NotNil(t, byName["Service/berth-meter"], "the audit ingest's Service")

	containers, _, _ := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	require.Len(t, containers, 1)
	args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	env0, _, _ := unstructured.NestedSlice(containers[0].(map[string]any), "env")
	require.Len(t, env0, 1)
	assert.Equal(t, "BERTH_DATABASE_URL", env0[0].(map[string]any)["name"])

	// The Deployment's arguments, with the mounted file and the ports
	// moved to this machine.
	dir := framework.Dir(t, "meter")
	data, _, _ := unstructured.NestedString(prices.Object, "data", "prices.yaml")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prices.yaml"), []byte(data), 0o600))
	keys := framework.Dir(t, "audit-keys")
	require.NoError(t, os.WriteFile(filepath.Join(keys, "k1"), []byte(strings.Repeat("k", 64)), 0o600))
	dsn := framework.PostgresServer(t).Database(t)
	kubeconfig := env.ServiceAccountKubeconfig(t, namespace, "berth-meter")
	// The chart's args, with this machine's files and free ports.
	meter, ports := framework.StartServer(t, "berth-meter", framework.Binary(t, "berth-meter"), 2, func(ports []int) []string {
		var run []string
		for _, a := range args {
			switch {
			case strings.HasPrefix(a, "--prices="):
				a = "--prices=" + filepath.Join(dir, "prices.yaml")
			case strings.HasPrefix(a, "--metrics-bind-address="):
				a = "--metrics-bind-address=0"
			case strings.HasPrefix(a, "--health-probe-bind-address="):
				a = "--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(ports[0])
			case strings.HasPrefix(a, "--api-bind-address="):
				a = "--api-bind-address=127.0.0.1:" + strconv.Itoa(ports[1])
			case strings.HasPrefix(a, "--audit-keys="):
				a = "--audit-keys=" + keys
			}
			run = append(run, a)
		}
		return append(run, "--kubeconfig", kubeconfig, "--database-url", dsn)
	}, func(ports []int) string { return "http://127.0.0.1:" + strconv.Itoa(ports[0]) + "/readyz" })
	api := ports[1]

	nodes, err := env.NodesByPool(ctx)
	require.NoError(t, err)
	ns := env.Namespace(t, "chart-meter")
	pod := testutil.Pod("ws").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Workspace("ws").Resource(corev1.ResourceCPU, "1").
		NodeName(nodes["spot-ssd"][0].Name).Obj()
	require.NoError(t, env.Client.Create(ctx, pod))
	framework.Eventually(t, time.Minute, "the Pod runs and carries the meter's finalizer", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return pod.Status.StartTime != nil && len(pod.Finalizers) > 0, err
	})
	postAuditEvent(t, env, ns, "https://127.0.0.1:"+strconv.Itoa(api))
	time.Sleep(3 * time.Second)
	require.NoError(t, env.Client.Delete(ctx, pod))
	framework.Eventually(t, time.Minute, "the Pod is gone", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return client.IgnoreNotFound(err) == nil && err != nil, client.IgnoreNotFound(err)
	})

	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var secs, cost float64
	var org string
	require.NoError(t, conn.QueryRow(ctx, "SELECT sum(running_seconds), sum(cost_dollars), min(org) FROM usage_intervals").Scan(&secs, &cost, &org))
	assert.GreaterOrEqual(t, secs, 2.0, "the Pod's run is charged")
	assert.Positive(t, cost, "at the rendered spot price")
	assert.Equal(t, "chart-meter", org)
	var audited int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM audit_logs WHERE org = 'chart-meter'").Scan(&audited))
	assert.Equal(t, 1, audited, "the gateway's event is in the audit log")

	log, err := os.ReadFile(meter.Log)
	require.NoError(t, err)
	for _, line := range strings.Split(string(log), "\n") {
		assert.NotContains(t, strings.ToLower(line), "forbidden", "berth-meter was refused a request")
	}
}

// postAuditEvent posts one event for workspace ws of ns, as a gateway
// ServiceAccount allowed to, and expects it taken.
func postAuditEvent(t *testing.T, env *framework.ClusterEnv, ns, base string) {
	t.Helper()
	token := env.ServiceAccountToken(t, ns, "gateway",
		rbacv1.PolicyRule{APIGroups: []string{"berth.dev"}, Resources: []string{"auditevents"}, Verbs: []string{"create"}})
	body := fmt.Sprintf(`{"namespace": %q, "workspace": "ws", "user": "ana", "action": "ai.completion", "instruction": "hello"}`, ns)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+audit.IngestPath, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "%s", out)
}
