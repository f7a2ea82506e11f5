package metering

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/audit"
	"berth.dev/berth/pkg/metering"
	"berth.dev/berth/test/framework"
)

// kubectl berth usage and audit verify read berth-meter's API over
// verified TLS, with the developer's own token, and RBAC on the org's name
// decides what they may read.
func TestKubectlBerthUsageAndAuditVerify(t *testing.T) {
	env := framework.Cluster(t)
	pool, dsn := migrated(t)
	keys := keyDir(t, "k1")
	t0 := time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC)
	for _, p := range []metering.Pod{
		{UID: "00000000-0000-0000-0000-0000000000a1", Org: "acme", Class: "workspace", User: "ana",
			Start: t0, End: t0.Add(3 * time.Hour), CPU: 2, NodeShare: 0.125, NodePrice: 0.8, Pool: "spot-ssd", Spot: true},
		{UID: "00000000-0000-0000-0000-0000000000a2", Org: "acme", Class: "build", User: "bo",
			Start: t0, End: t0.Add(time.Hour), CPU: 1, NodeShare: 0.1, NodePrice: 0.9, Pool: "on-demand"},
	} {
		require.NoError(t, metering.Write(t.Context(), pool, metering.Intervals(p, t0, t0.Add(4*time.Hour), time.Minute, nil)))
	}
	log := &audit.Log{DB: pool, Keys: keyring(t, keys)}
	for i := range 3 {
		_, err := log.Append(t.Context(), audit.Event{Org: "acme", Actor: audit.Actor, Action: berthv1alpha1.AuditBuildReleased,
			Detail: fmt.Sprintf("build %d released", i)})
		require.NoError(t, err)
	}

	// berth-meter's serving certificate, for 127.0.0.1, is its own CA.
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("127.0.0.1", []net.IP{net.ParseIP("127.0.0.1")}, nil)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	require.NoError(t, os.WriteFile(certFile, certPEM, 0o600))
	require.NoError(t, os.WriteFile(keyFile, keyPEM, 0o600))
	_, api := runMeter(t, "--kubeconfig", env.Kubeconfig(), "--database-url", dsn, "--audit-keys", keys,
		"--tls-cert-file", certFile, "--tls-key-file", keyFile)

	ns := env.Namespace(t, "acme")
	env.ServiceAccountToken(t, ns, "finance")
	env.Create(t, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: ns + "-finance"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{"berth.dev"}, Resources: []string{"usage", "auditlogs"}, ResourceNames: []string{"acme"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, ResourceNames: []string{ns}, Verbs: []string{"get"}},
		{APIGroups: []string{"berth.dev"}, Resources: []string{"workspaces"}, Verbs: []string{"get", "list"}},
	}})
	env.Create(t, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ns + "-finance"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ns + "-finance"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "finance", Namespace: ns}}})
	kubeconfig := env.ServiceAccountKubeconfig(t, ns, "finance")
	bin := framework.Binary(t, "kubectl-berth")
	kubectl := func(args ...string) (int, string, string) {
		args = append(args, "--kubeconfig="+kubeconfig, "-n", ns)
		cmd := exec.CommandContext(t.Context(), bin, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if _, ok := err.(*exec.ExitError); err != nil && !ok {
			t.Fatalf("kubectl berth %v: %v", args, err)
		}
		t.Logf("kubectl berth %s: exit %d\n%s%s", strings.Join(args, " "), cmd.ProcessState.ExitCode(), stdout.String(), stderr.String())
		return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
	}
	meterFlags := []string{"--meter-url=https://" + api, "--meter-ca-file=" + certFile}
	span := []string{"--since=2026-11-30T00:00:00Z", "--until=2026-12-02T00:00:00Z"}

	code, _, stderr := kubectl(append([]string{"usage"}, span...)...)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "berth-meter's URL is not set: pass --meter-url or set $BERTH_METER_URL")

	// The namespace's org, by user: hours, CPU and cost, and a total.
	code, out, _ := kubectl(append(append([]string{"usage"}, span...), meterFlags...)...)
	require.Equal(t, 0, code)
	assert.Contains(t, out, "org acme, 2026-11-30T00:00:00Z to 2026-12-02T00:00:00Z")
	assert.Regexp(t, `(?m)^USER +HOURS +CPU-CORE-H +MEMORY-GIB-H +GPU-H +COST +SPOT +ON-DEMAND$`, out)
	assert.Regexp(t, `(?m)^ana +3\.00 +6\.00 +0\.00 +0\.00 +\$0\.30 +\$0\.30 +\$0\.00$`, out)
	assert.Regexp(t, `(?m)^bo +1\.00 +1\.00 +0\.00 +0\.00 +\$0\.09 +\$0\.00 +\$0\.09$`, out)
	assert.Regexp(t, `(?m)^TOTAL +4\.00 +7\.00 +0\.00 +0\.00 +\$0\.39 +\$0\.30 +\$0\.09$`, out)

	code, out, _ = kubectl(append(append([]string{"usage", "--org=acme", "--by=class", "-o", "json"}, span...), meterFlags...)...)
	require.Equal(t, 0, code)
	var rep berthv1alpha1.UsageReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Len(t, rep.Totals, 2)
	assert.Equal(t, "build", rep.Totals[0].Key)
	assert.InDelta(t, 3600, rep.Totals[0].RunningSeconds, 1e-6)

	code, _, stderr = kubectl(append([]string{"usage", "--org=globex"}, meterFlags...)...)
	assert.Equal(t, 1, code, "another org's usage")
	assert.Contains(t, stderr, `403 Forbidden`)
	assert.Contains(t, stderr, `may not get usage.berth.dev "globex" cluster-wide`)
	code, _, stderr = kubectl(append([]string{"usage", "--since=yesterday"}, meterFlags...)...)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, `--since: "yesterday" is neither an RFC 3339 time`)

	code, out, _ = kubectl(append([]string{"audit", "verify"}, meterFlags...)...)
	require.Equal(t, 0, code)
	assert.Regexp(t, `^org acme: 3 rows verified; head row 3, hash [0-9a-f]{64}\n$`, out)

	// A row changed by hand in SQL: named, and exit 3.
	exec1(t, pool, "UPDATE audit_logs SET detail = 'nothing happened' WHERE org = 'acme' AND seq = 2")
	code, out, _ = kubectl(append([]string{"audit", "verify", "--org=acme"}, meterFlags...)...)
	assert.Equal(t, 3, code)
	assert.Equal(t, "org acme: chain broken at row 2: was changed: its hash does not match its fields (1 rows before it verified)\n", out)
	code, out, _ = kubectl(append([]string{"audit", "verify", "-o", "json"}, meterFlags...)...)
	assert.Equal(t, 3, code)
	var ar berthv1alpha1.AuditReport
	require.NoError(t, json.Unmarshal([]byte(out), &ar))
	require.NotNil(t, ar.Broken)
	assert.EqualValues(t, 2, ar.Broken.Seq)

	code, _, stderr = kubectl(append([]string{"audit", "verify", "--org=globex"}, meterFlags...)...)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, `may not get auditlogs.berth.dev "globex" cluster-wide`)

	// ls: what a running workspace costs an hour, by its last interval
	// metered: 1/8 of a $0.80 spot node is $0.10 an hour.
	ws := &berthv1alpha1.Workspace{ObjectMeta: metav1.ObjectMeta{Name: "ide", Namespace: ns},
		Spec: berthv1alpha1.WorkspaceSpec{Started: true, Template: startedWorkspace(ns, "ide").Spec.Template}}
	env.Create(t, ws)
	// berth-meter adds its finalizer meanwhile: write on the latest.
	require.NoError(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := env.Client.Get(t.Context(), client.ObjectKeyFromObject(ws), ws); err != nil {
			return err
		}
		ws.Status.Phase = berthv1alpha1.WorkspaceRunning
		return env.Client.Status().Update(t.Context(), ws)
	}))
	now := time.Now().Truncate(time.Minute)
	require.NoError(t, metering.Write(t.Context(), pool, metering.Intervals(metering.Pod{
		UID: "00000000-0000-0000-0000-0000000000a3", Org: "acme", Namespace: ns, Name: "ide-1-abcde", Class: "workspace",
		User: "ana", Workspace: "ide", Start: now.Add(-2 * time.Minute), CPU: 2, NodeShare: 0.125, NodePrice: 0.8, Spot: true,
	}, now.Add(-2*time.Minute), now.Add(30*time.Second), time.Minute, nil)))
	code, out, _ = kubectl(append([]string{"ls"}, meterFlags...)...)
	require.Equal(t, 0, code)
	assert.Regexp(t, `(?m)^NAME +USER +PHASE +IDLE +STOPPED-BY +NODE +POOL +COST/H +AGE$`, out)
	assert.Regexp(t, `(?m)^ide +ana +Running +- +- +- +- +\$0\.1000 +`, out)
	code, out, _ = kubectl("ls")
	require.Equal(t, 0, code, "without berth-meter, no cost")
	assert.Regexp(t, `(?m)^ide +ana +Running +- +- +- +- +- +`, out)
}
