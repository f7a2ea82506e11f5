package workspaces

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
	"berth.dev/berth/webhooks"
)

// An IDE gateway wakes, touches and stops a workspace through
// berth-manager's HTTPS API with a ServiceAccount token, allowed by RBAC
// on that one Workspace; every bad request gets a message that names what
// to fix.
func TestWorkspaceAPI(t *testing.T) {
	t.Parallel()
	env := setup(t)
	org := testutil.Org("ws-api").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)
	ws := workspace(ns, "ide", "")
	ws.Spec.Started = false
	env.Create(t, ws)
	gateway := env.ServiceAccountToken(t, ns, "gateway", rbacv1.PolicyRule{
		APIGroups: []string{berthv1alpha1.GroupName}, Resources: []string{"workspaces"}, ResourceNames: []string{"ide"}, Verbs: []string{"update"},
	})
	stranger := env.ServiceAccountToken(t, ns, "stranger")
	call := apiCaller(t, env)

	code, body := call(gateway, fmt.Sprintf("/v1/namespaces/%s/workspaces/ide/wake?wait=60s", ns))
	require.Equal(t, http.StatusOK, code, body)
	var got berthv1alpha1.WorkspaceAnswer
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	assert.Equal(t, berthv1alpha1.WorkspaceRunning, got.Phase, "wait=60s answers once the workspace runs")
	assert.True(t, got.Started)
	assert.NotEmpty(t, got.NodeName)

	code, body = call(gateway, fmt.Sprintf("/v1/namespaces/%s/workspaces/ide/touch", ns))
	require.Equal(t, http.StatusOK, code, body)
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKeyFromObject(ws), ws))
	touched, err := time.Parse(time.RFC3339, ws.Annotations[berthv1alpha1.AnnotationLastActivity])
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now(), touched, time.Minute)

	for _, tc := range []struct {
		name, token, path string
		code              int
		want              string
	}{
		{"no token", "", "/v1/namespaces/" + ns + "/workspaces/ide/wake", http.StatusUnauthorized, "Authorization: Bearer"},
		{"a bad token", "not-a-token", "/v1/namespaces/" + ns + "/workspaces/ide/wake", http.StatusUnauthorized, "not valid"},
		{"no rights", stranger, "/v1/namespaces/" + ns + "/workspaces/ide/wake", http.StatusForbidden, "resources: [workspaces], resourceNames: [ide], verbs: [update]"},
		{"another workspace", gateway, "/v1/namespaces/" + ns + "/workspaces/other/wake", http.StatusForbidden, `"other"`},
		{"a malformed wait", gateway, "/v1/namespaces/" + ns + "/workspaces/ide/wake?wait=soon", http.StatusBadRequest, `wait="soon"`},
		{"a malformed heartbeat", gateway, "/v1/namespaces/" + ns + "/workspaces/ide/touch?at=yesterday", http.StatusBadRequest, `at="yesterday" is not an RFC 3339 time`},
		{"an unknown action", gateway, "/v1/namespaces/" + ns + "/workspaces/ide/reboot", http.StatusNotFound, "use wake, stop or touch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := call(tc.token, tc.path)
			assert.Equal(t, tc.code, code, body)
			assert.Contains(t, body, tc.want)
		})
	}
	t.Run("unknown workspace", func(t *testing.T) {
		admin := env.ServiceAccountToken(t, ns, "admin", rbacv1.PolicyRule{
			APIGroups: []string{berthv1alpha1.GroupName}, Resources: []string{"workspaces"}, Verbs: []string{"update"},
		})
		code, body := call(admin, "/v1/namespaces/"+ns+"/workspaces/nope/wake")
		assert.Equal(t, http.StatusNotFound, code, body)
		assert.Contains(t, body, `workspace "nope" does not exist in namespace`)
	})

	code, body = call(gateway, fmt.Sprintf("/v1/namespaces/%s/workspaces/ide/stop", ns))
	require.Equal(t, http.StatusOK, code, body)
	stopped := waitPhase(t, env, ns, "ide", berthv1alpha1.WorkspaceStopped, time.Minute)
	assert.Equal(t, berthv1alpha1.StoppedUser, stopped.Status.StoppedBy)
}

// apiCaller returns a function that POSTs to berth-manager's workspace API
// with a bearer token, trusting the CA berth wrote into its webhook
// configuration, and returns the status and the body, or the error's
// message.
func apiCaller(t *testing.T, env *framework.ClusterEnv) func(token, path string) (int, string) {
	t.Helper()
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Name: webhooks.ConfigurationName}, cfg))
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(cfg.Webhooks[0].ClientConfig.CABundle))
	hc := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	return func(token, path string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "https://"+manager.Webhook+path, nil)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		if resp.StatusCode >= 400 {
			// Errors are {"error": message}: return the message.
			var e struct{ Error string }
			require.NoError(t, json.Unmarshal(b, &e), "error body %s", b)
			return resp.StatusCode, e.Error
		}
		return resp.StatusCode, string(b)
	}
}
