package metering

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/audit"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
	"berth.dev/berth/webhooks"
)

// berth-manager's own actions (a wake, a quota denial, a build's release,
// a user's stop) reach the org's audit chain as rows of system:berth,
// each once: a restarted meter, which lists the same Events again,
// appends only what is new.
func TestBerthsOwnActionsBecomeAuditRows(t *testing.T) {
	env := framework.Cluster(t)
	pool, dsn := migrated(t)
	keys := keyDir(t, "k1")
	// The other tests of the package run without berth's webhooks.
	t.Cleanup(func() { removeWebhooks(t, env) })
	framework.StartManager(t, env, framework.ManagerOptions{
		Args: []string{"--scheduler-name=", "--controllers=orgstatus,buildqueue,workspaces"},
	})
	meter := startAuditMeter(t, env, dsn, keys)

	org := testutil.Org("audited").MaxWorkspaces(1).Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)

	env.Create(t, startedWorkspace(ns, "ws-a"))
	ws := &berthv1alpha1.Workspace{}
	framework.Eventually(t, 2*time.Minute, "ws-a running", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "ws-a"}, ws)
		return ws.Status.Phase == berthv1alpha1.WorkspaceRunning, err
	})
	env.Create(t, startedWorkspace(ns, "ws-b"))
	env.Create(t, testutil.Job("build").Namespace(ns).Class(berthv1alpha1.ClassBuild).Obj())
	require.NoError(t, env.Client.Delete(t.Context(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ws.Status.PodName}}))

	want := []string{berthv1alpha1.AuditWorkspaceWoken, berthv1alpha1.AuditQuotaDenied,
		berthv1alpha1.AuditBuildReleased, berthv1alpha1.AuditWorkspaceStopped}
	var rows []auditRow
	framework.Eventually(t, time.Minute, "a row for each action", func(ctx context.Context) (bool, error) {
		var err error
		rows, err = auditRows(ctx, pool, org.Name)
		return hasActions(rows, want...), err
	})
	for _, r := range rows {
		assert.Equal(t, audit.Actor, r.actor, "row %d", r.seq)
		switch r.action {
		case berthv1alpha1.AuditWorkspaceWoken:
			assert.Equal(t, "ws-a", r.workspace)
		case berthv1alpha1.AuditQuotaDenied:
			assert.Contains(t, r.detail, `a workspace Pod of user "ana" in namespace `+ns)
			assert.Contains(t, r.detail, "maxWorkspaces")
		case berthv1alpha1.AuditBuildReleased:
			assert.Contains(t, r.detail, "build Job "+ns+"/build")
		case berthv1alpha1.AuditWorkspaceStopped:
			assert.Contains(t, r.detail, "stopped by its user")
		}
	}
	log := &audit.Log{DB: pool, Keys: keyring(t, keys)}
	rep := verify(t, log, org.Name)
	require.Nil(t, rep.Broken)

	// A restarted meter lists every Event again. Its single worker takes
	// them in order, so once a newer action's row is in, the older ones
	// were seen again, and appended nothing.
	require.NoError(t, syscall.Kill(meter.PID(), syscall.SIGKILL))
	meter.Stop()
	before, err := auditRows(t.Context(), pool, org.Name)
	require.NoError(t, err)
	startAuditMeter(t, env, dsn, keys)
	env.Create(t, testutil.Job("build-2").Namespace(ns).Class(berthv1alpha1.ClassBuild).Obj())
	framework.Eventually(t, time.Minute, "the second release's row", func(ctx context.Context) (bool, error) {
		var err error
		rows, err = auditRows(ctx, pool, org.Name)
		for _, r := range rows {
			if r.action == berthv1alpha1.AuditBuildReleased && r.seq > before[len(before)-1].seq {
				return true, err
			}
		}
		return false, err
	})
	seen := map[string]int64{}
	for _, r := range rows {
		key := r.action + " " + r.detail + " " + r.at.String()
		assert.Zero(t, seen[key], "row %d records row %d's action again: %s", r.seq, seen[key], key)
		seen[key] = r.seq
	}
	rep = verify(t, log, org.Name)
	assert.Nil(t, rep.Broken)
	assert.Equal(t, int64(len(rows)), rep.Rows)
}

// startAuditMeter runs berth-meter with audit keys, and waits until it is
// ready.
func startAuditMeter(t *testing.T, env *framework.ClusterEnv, dsn, keys string) *framework.Process {
	t.Helper()
	p, _ := runMeter(t, "--kubeconfig", env.Kubeconfig(), "--database-url", dsn, "--audit-keys", keys)
	return p
}

func startedWorkspace(ns, name string) *berthv1alpha1.Workspace {
	pod := testutil.Pod(name).Class(berthv1alpha1.ClassWorkspace).User("ana").Obj()
	return &berthv1alpha1.Workspace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: berthv1alpha1.WorkspaceSpec{Started: true, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels}, Spec: pod.Spec,
		}},
	}
}

// removeWebhooks deletes the webhook configurations berth-manager
// registered, once it has stopped.
func removeWebhooks(t *testing.T, env *framework.ClusterEnv) {
	ctx := context.Background()
	for _, obj := range []client.Object{
		&admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: webhooks.ConfigurationName}},
		&admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: webhooks.ConfigurationName}},
	} {
		if err := env.Client.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
			t.Errorf("remove %T: %v", obj, err)
		}
	}
}

type auditRow struct {
	seq                              int64
	at                               time.Time
	actor, workspace, action, detail string
}

func auditRows(ctx context.Context, pool *pgxpool.Pool, org string) ([]auditRow, error) {
	rows, err := pool.Query(ctx, "SELECT seq, at, actor, workspace, action, detail FROM audit_logs WHERE org = $1 ORDER BY seq", org)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var r auditRow
		if err := rows.Scan(&r.seq, &r.at, &r.actor, &r.workspace, &r.action, &r.detail); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func hasActions(rows []auditRow, actions ...string) bool {
	seen := map[string]bool{}
	for _, r := range rows {
		seen[r.action] = true
	}
	for _, a := range actions {
		if !seen[a] {
			return false
		}
	}
	return true
}

func keyring(t *testing.T, dir string) *audit.Keyring {
	t.Helper()
	ring, err := audit.LoadKeyring(dir, "")
	require.NoError(t, err)
	return ring
}

// With --metering-finalizer, berth-manager adds the meter's finalizer at
// admission: a Pod created, run and deleted while berth-meter is down is
// kept until the meter is back, and charged to the second.
func TestAPodTheMeterNeverSawRunIsCharged(t *testing.T) {
	env := framework.Cluster(t)
	pool, dsn := migrated(t)
	t.Cleanup(func() { removeWebhooks(t, env) })
	framework.StartManager(t, env, framework.ManagerOptions{
		Args: []string{"--scheduler-name=", "--controllers=orgstatus", "--metering-finalizer"},
	})
	org := testutil.Org("unseen").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)

	pod := testutil.Pod("ws").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
	env.Create(t, pod)
	assert.Contains(t, pod.Finalizers, berthv1alpha1.FinalizerMetering, "added at admission")
	framework.Eventually(t, time.Minute, "the Pod runs", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return pod.Status.StartTime != nil, err
	})
	time.Sleep(2 * time.Second)
	require.NoError(t, env.Client.Delete(t.Context(), pod))
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKeyFromObject(pod), pod), "the finalizer holds the Pod")

	startMeter(t, env, dsn)
	framework.Eventually(t, time.Minute, "the meter lets the Pod go", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	end := pod.DeletionTimestamp.Add(-time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second)
	got := stored(t, pool)
	assert.InDelta(t, end.Sub(pod.Status.StartTime.Time).Seconds(), got[string(pod.UID)], 1e-6, "seconds run")
}
