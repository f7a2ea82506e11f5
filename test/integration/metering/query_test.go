package metering

import (
	"crypto/tls"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"berth.dev/berth/pkg/metering"
	"berth.dev/berth/test/framework"
)

// A platform team reads an org's usage by user, workspace, project or
// class, as JSON or CSV, with RBAC deciding which orgs it may read.
func TestUsageAPI(t *testing.T) {
	env := framework.Cluster(t)
	pool, dsn := migrated(t)
	t0 := time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC)
	pods := []metering.Pod{
		{UID: "00000000-0000-0000-0000-00000000000a", Org: "acme", Class: "workspace", User: "ana", Workspace: "ws-ana",
			Start: t0, End: t0.Add(3 * time.Hour), CPU: 2, NodeShare: 0.125, NodePrice: 0.8, Pool: "spot-ssd", Spot: true},
		{UID: "00000000-0000-0000-0000-00000000000b", Org: "acme", Class: "build", User: "bo", Project: "api",
			Start: t0.Add(30 * time.Minute), End: t0.Add(90 * time.Minute), CPU: 1, NodeShare: 0.1, NodePrice: 0.9, Pool: "on-demand"},
		{UID: "00000000-0000-0000-0000-00000000000c", Org: "globex", Class: "workspace", User: "cy",
			Start: t0, End: t0.Add(time.Hour), CPU: 8},
	}
	for _, p := range pods {
		require.NoError(t, metering.Write(t.Context(), pool, metering.Intervals(p, t0, t0.Add(4*time.Hour), time.Minute, nil)))
	}

	totals, err := metering.Totals(t.Context(), pool, metering.UsageQuery{Org: "acme", By: "user", Since: t0, Until: t0.Add(24 * time.Hour)})
	require.NoError(t, err)
	require.Len(t, totals, 2, "globex's usage is not acme's")
	assert.Equal(t, "ana", totals[0].Key)
	assert.InDelta(t, 3*3600*2, totals[0].CPUCoreSeconds, 1e-6)
	assert.InDelta(t, 0.8*0.125*3, totals[0].SpotCostDollars, 1e-9)
	assert.InDelta(t, 0.9*0.1*1, totals[1].OnDemandCostDollars, 1e-9)
	part, err := metering.Totals(t.Context(), pool, metering.UsageQuery{Org: "acme", By: "class", Since: t0.Add(time.Hour), Until: t0.Add(2 * time.Hour)})
	require.NoError(t, err)
	require.Len(t, part, 2)
	assert.InDelta(t, 1800, part[0].RunningSeconds, 1e-6, "the build's half hour within the hour asked for")
	assert.InDelta(t, 3600, part[1].RunningSeconds, 1e-6)

	_, api := runMeter(t, "--kubeconfig", env.Kubeconfig(), "--database-url", dsn)

	// A reader of acme's usage, by an RBAC rule on the org's name.
	ns := env.Namespace(t, "")
	token := env.ServiceAccountToken(t, ns, "finance")
	env.Create(t, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: ns + "-usage"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{"berth.dev"}, Resources: []string{"usage"}, ResourceNames: []string{"acme"}, Verbs: []string{"get"}},
	}})
	env.Create(t, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ns + "-usage"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ns + "-usage"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "finance", Namespace: ns}}})

	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(query, accept string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, fmt.Sprintf("https://%s%s?%s", api, metering.UsagePath, query), nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := hc.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	span := "&since=2026-11-30T00:00:00Z&until=2026-12-02T00:00:00Z"

	code, body := get("org=acme&by=workspace"+span, "")
	require.Equal(t, http.StatusOK, code, body)
	var out struct {
		Org    string           `json:"org"`
		By     string           `json:"by"`
		Totals []metering.Total `json:"totals"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &out))
	assert.Equal(t, "acme", out.Org)
	require.Len(t, out.Totals, 2)
	assert.Equal(t, "", out.Totals[0].Key, "the build has no workspace")
	assert.Equal(t, "ws-ana", out.Totals[1].Key)

	code, body = get("org=acme&by=project"+span, "text/csv")
	require.Equal(t, http.StatusOK, code, body)
	records, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	require.NoError(t, err)
	require.Len(t, records, 3)
	assert.Equal(t, []string{"project", "running_seconds"}, records[0][:2])
	assert.Equal(t, []string{"api", "3600"}, records[2][:2])

	for name, tc := range map[string]struct {
		query string
		code  int
		want  string
	}{
		"another org":  {"org=globex" + span, 403, `may not get usage.berth.dev \"globex\" cluster-wide`},
		"no org":       {"by=user", 400, `parameter \"org\" is empty`},
		"a bad by":     {"org=acme&by=node", 400, `parameter \"by\" is \"node\"; use one of class, pool, project, user, workspace`},
		"a bad time":   {"org=acme&since=yesterday", 400, `parameter \"since\" is \"yesterday\"; use an RFC 3339 time`},
		"backwards":    {"org=acme&since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z", 400, "is not before"},
		"a bad format": {"org=acme&format=xml", 400, `parameter \"format\" is \"xml\"`},
	} {
		code, body := get(tc.query, "")
		assert.Equal(t, tc.code, code, "%s: %s", name, body)
		assert.Contains(t, body, tc.want, name)
	}
}
