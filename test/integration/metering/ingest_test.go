package metering

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/audit"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// mayAudit is the RBAC rule a gateway needs to post audit events.
var mayAudit = rbacv1.PolicyRule{APIGroups: []string{"berth.dev"}, Resources: []string{"auditevents"}, Verbs: []string{"create"}}

// An IDE gateway posts audit events to berth-meter: good ones are chained,
// bad ones get a 4xx naming the field and the fix and leave nothing, and no
// text of an instruction, response or patch reaches the database or the log.
func TestAuditIngest(t *testing.T) {
	env := framework.Cluster(t)
	pool, dsn := migrated(t)
	keys := keyDir(t, "k1")
	meter, api := runMeter(t, "--kubeconfig", env.Kubeconfig(), "--database-url", dsn, "--audit-keys", keys)

	ns := env.Namespace(t, "acme")
	env.Create(t, testutil.Pod("ws-ana").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Workspace("ws-ana").SchedulerName("none").Obj())
	gateway := env.ServiceAccountToken(t, ns, "gateway", mayAudit)
	nobody := env.ServiceAccountToken(t, ns, "nobody")
	orphan := env.Namespace(t, "")
	orphanGateway := env.ServiceAccountToken(t, orphan, "gateway", mayAudit)

	// The self-signed certificate berth-meter makes without --tls-cert-file.
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	url := "https://" + api + audit.IngestPath
	post := func(token string, body any) (int, string) {
		var raw []byte
		switch b := body.(type) {
		case []byte:
			raw = b
		default:
			var err error
			raw, err = json.Marshal(b)
			require.NoError(t, err)
		}
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, bytes.NewReader(raw))
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(out)
	}
	secrets := []string{"SECRET-PROMPT-5ab1", "SECRET-ANSWER-77e0", "SECRET-DIFF-90ff"}
	event := func() map[string]any {
		return map[string]any{"namespace": ns, "workspace": "ws-ana", "user": "ana", "action": "ai.completion",
			"model": "qwen2.5-coder", "tokensIn": 120, "tokensOut": 48,
			"instruction": secrets[0], "response": secrets[1], "patch": secrets[2]}
	}
	with := func(k string, v any) map[string]any {
		e := event()
		if v == nil {
			delete(e, k)
		} else {
			e[k] = v
		}
		return e
	}

	for i := range 3 {
		code, body := post(gateway, event())
		require.Equal(t, http.StatusCreated, code, body)
		assert.JSONEq(t, fmt.Sprintf(`{"org": "acme", "seq": %d}`, i+1), body)
	}

	for name, tc := range map[string]struct {
		token string
		body  any
		code  int
		want  string
	}{
		"no token":          {"", event(), 401, "no bearer token"},
		"a bad token":       {"not-a-token", event(), 401, "the token is not valid"},
		"no rights":         {nobody, event(), 403, `system:serviceaccount:` + ns + `:nobody may not create auditevents.berth.dev in namespace \"` + ns + `\"`},
		"no user":           {gateway, with("user", nil), 400, `field \"user\" is empty`},
		"no action":         {gateway, with("action", ""), 400, `field \"action\" is empty`},
		"unknown workspace": {gateway, with("workspace", "ws-ghost"), 404, `workspace \"ws-ghost\" is not in namespace`},
		"bad workspace":     {gateway, with("workspace", "a b"), 400, `field \"workspace\" \"a b\" is not a workspace id`},
		"negative tokens":   {gateway, with("tokensOut", -1), 400, "token counts are 0 or more"},
		"unknown field":     {gateway, with("prompt", "x"), 400, `unknown field \"prompt\"`},
		"not JSON":          {gateway, []byte("instruction=" + secrets[0]), 400, "the body is not an audit event"},
		"too large":         {gateway, with("patch", strings.Repeat("x", audit.MaxEventBytes)), 413, "larger than"},
		"no org":            {orphanGateway, with("namespace", orphan), 422, "belongs to no org"},
	} {
		code, body := post(tc.token, tc.body)
		assert.Equal(t, tc.code, code, "%s: %s", name, body)
		assert.Contains(t, body, tc.want, name)
		for _, s := range secrets {
			assert.NotContains(t, body, s, "%s: the answer repeats no text", name)
		}
	}

	var rows int
	// (berth-meter also appends the cluster's berth-manager Events, of
	// other orgs, from other tests.)
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT count(*) FROM audit_logs WHERE org = 'acme'").Scan(&rows))
	assert.Equal(t, 3, rows, "the refused events left nothing")
	ring, err := audit.LoadKeyring(keys, "")
	require.NoError(t, err)
	rep, err := (&audit.Log{DB: pool, Keys: ring}).Verify(t.Context(), "acme")
	require.NoError(t, err)
	assert.Nil(t, rep.Broken)
	assert.EqualValues(t, 3, rep.Rows)

	dump := pgDump(t, dsn)
	log, err := os.ReadFile(meter.Log)
	require.NoError(t, err)
	for _, s := range secrets {
		assert.NotContains(t, dump, s, "the database holds no text")
		assert.NotContains(t, string(log), s, "the log holds no text")
	}
}
