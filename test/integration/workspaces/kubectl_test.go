package workspaces

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// A developer lists, wakes, touches and stops a workspace with the real
// kubectl berth, with rights on Workspaces only.
func TestKubectlBerthWorkspaces(t *testing.T) {
	t.Parallel()
	env := setup(t)
	managerMu.Lock()
	managerURL, ca := manager.URL, filepath.Join(manager.CertDir, "ca.crt")
	managerMu.Unlock()
	org := testutil.Org("ws-kubectl").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)
	ws := workspace(ns, "ide", "")
	ws.Spec.Started = false
	env.Create(t, ws)
	waitPhase(t, env, ns, "ide", berthv1alpha1.WorkspaceStopped, time.Minute)
	env.ServiceAccountToken(t, ns, "dev", rbacv1.PolicyRule{
		APIGroups: []string{berthv1alpha1.GroupName}, Resources: []string{"workspaces"}, Verbs: []string{"get", "list", "update"},
	})
	env.ServiceAccountToken(t, ns, "viewer", rbacv1.PolicyRule{
		APIGroups: []string{berthv1alpha1.GroupName}, Resources: []string{"workspaces"}, Verbs: []string{"get", "list"},
	})
	bin := framework.Binary(t, "kubectl-berth")
	as := func(sa string) func(args ...string) (int, string, string) {
		kubeconfig := env.ServiceAccountKubeconfig(t, ns, sa)
		return func(args ...string) (int, string, string) {
			args = append(args, "--kubeconfig="+kubeconfig, "-n", ns, "--manager-url="+managerURL, "--manager-ca-file="+ca)
			cmd := exec.CommandContext(t.Context(), bin, args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if _, ok := err.(*exec.ExitError); err != nil && !ok {
				t.Fatalf("kubectl berth %v: %v", args, err)
			}
			t.Logf("kubectl berth %s: exit %d\n%s%s", strings.Join(args[:len(args)-5], " "), cmd.ProcessState.ExitCode(), stdout.String(), stderr.String())
			return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
		}
	}
	dev, viewer := as("dev"), as("viewer")

	code, out, _ := dev("ls")
	require.Equal(t, 0, code)
	assert.Regexp(t, `(?m)^NAME +USER +PHASE +IDLE +STOPPED-BY +NODE +POOL +COST/H +AGE$`, out)
	assert.Regexp(t, `(?m)^ide +ana +Stopped `, out)

	code, _, stderr := viewer("wake", "ide")
	assert.Equal(t, 1, code, "a viewer may not wake")
	assert.Contains(t, stderr, "403 Forbidden")
	assert.Contains(t, stderr, "verbs: [update]")

	code, out, _ = dev("wake", "ide", "--wait=60s", "-o", "json")
	require.Equal(t, 0, code)
	var a berthv1alpha1.WorkspaceAnswer
	require.NoError(t, json.Unmarshal([]byte(out), &a))
	assert.Equal(t, berthv1alpha1.WorkspaceRunning, a.Phase)
	assert.NotEmpty(t, a.NodeName)

	code, out, _ = dev("ls", "-o", "wide")
	require.Equal(t, 0, code)
	// The developer may not read nodes: the pool prints as "-"; without
	// --meter-url, so does the cost.
	assert.Regexp(t, `(?m)^ide +ana +Running +\S+ +- +`+a.NodeName+` +- +- +\S+ +`+a.PodName, out)

	code, _, _ = dev("touch", "ide")
	require.Equal(t, 0, code)
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKeyFromObject(ws), ws))
	touched, err := time.Parse(time.RFC3339, ws.Annotations[berthv1alpha1.AnnotationLastActivity])
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now(), touched, time.Minute)

	code, _, _ = dev("stop", "ide")
	require.Equal(t, 0, code)
	waitPhase(t, env, ns, "ide", berthv1alpha1.WorkspaceStopped, time.Minute)
	code, out, _ = dev("ls", "-o", "yaml", "--user=ana")
	require.Equal(t, 0, code)
	assert.Contains(t, out, "kind: WorkspaceList")
	assert.Contains(t, out, "stoppedBy: user")
	code, out, _ = dev("ls", "--user=bob")
	require.Equal(t, 0, code)
	assert.NotContains(t, out, "ide")

	// Organizations are cluster-scoped: the developer is told whom to ask;
	// a platform engineer sees the org's use against its caps.
	code, _, stderr = dev("orgs")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "ask the platform team for get and list on organizations.berth.dev")
	env.Create(t, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: ns + "-orgs"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{berthv1alpha1.GroupName}, Resources: []string{"organizations"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}},
	}})
	env.Create(t, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ns + "-orgs"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ns + "-orgs"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "viewer", Namespace: ns}}})
	framework.Eventually(t, 30*time.Second, "the viewer reads its org", func(context.Context) (bool, error) {
		code, out, _ := viewer("orgs")
		return code == 0 && strings.Contains(out, "ws-kubectl"), nil
	})
	code, out, _ = viewer("orgs")
	require.Equal(t, 0, code)
	assert.Regexp(t, `(?m)^ORG +WORKSPACES +BUILDS +QUEUED +GPUS$`, out)
	assert.Regexp(t, `(?m)^ws-kubectl +\d+ +0 +0 +0$`, out)
	code, out, _ = viewer("orgs", "--all", "-o", "json")
	require.Equal(t, 0, code)
	assert.Contains(t, out, `"kind": "OrganizationList"`)
	assert.Contains(t, out, `"name": "ws-kubectl"`)

	code, _, stderr = dev("ls", "-o", "xml")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, `-o "xml" is not an output format: use table, wide, json or yaml`)
	code, _, stderr = dev("wake", "nope")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, `workspace "nope" does not exist in namespace`)
}
