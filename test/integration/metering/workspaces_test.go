package metering

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/metering"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// A stopped workspace's claim is charged by its size from the stop to the
// wake, as a period of its own that runs no time; the workspaces table
// follows the Workspace to its delete, which waits for the meter.
func TestAStoppedWorkspacesClaimIsCharged(t *testing.T) {
	env := framework.Cluster(t)
	pool, dsn := migrated(t)
	t.Cleanup(func() { removeWebhooks(t, env) })
	framework.StartManager(t, env, framework.ManagerOptions{
		Args: []string{"--scheduler-name=", "--controllers=orgstatus,workspaces"},
	})
	startMeter(t, env, dsn)
	org := testutil.Org("disks").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)

	size := resource.MustParse("10Gi")
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-home"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity: corev1.ResourceList{corev1.ResourceStorage: size}, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			ClaimRef:               &corev1.ObjectReference{Namespace: ns, Name: "home"},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp/" + ns + "-home"}},
		},
	}
	env.Create(t, pv)
	env.Create(t, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "home", Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: new(string), VolumeName: pv.Name,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	})
	ws := startedWorkspace(ns, "ide")
	spec := &ws.Spec.Template.Spec
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: "home", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "home"}}})
	spec.Containers[0].VolumeMounts = append(spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "home", MountPath: "/home"})
	env.Create(t, ws)

	phase := func(want berthv1alpha1.WorkspacePhase) {
		framework.Eventually(t, 2*time.Minute, "ide "+string(want), func(ctx context.Context) (bool, error) {
			err := env.Client.Get(ctx, client.ObjectKeyFromObject(ws), ws)
			return ws.Status.Phase == want, err
		})
	}
	started := func(on bool) {
		body := fmt.Appendf(nil, `{"spec":{"started":%t}}`, on)
		require.NoError(t, env.Client.Patch(t.Context(), ws, client.RawPatch("application/merge-patch+json", body)))
	}
	state := func(ctx context.Context) (string, error) {
		var s string
		err := pool.QueryRow(ctx, "SELECT state FROM workspaces WHERE namespace = $1 AND name = 'ide'", ns).Scan(&s)
		return s, err
	}
	phase(berthv1alpha1.WorkspaceRunning)
	started(false)
	phase(berthv1alpha1.WorkspaceStopped)
	framework.Eventually(t, 30*time.Second, "the workspaces table says stopped", func(ctx context.Context) (bool, error) {
		s, err := state(ctx)
		return s == "stopped", client.IgnoreNotFound(err)
	})
	time.Sleep(5 * time.Second)
	started(true)
	phase(berthv1alpha1.WorkspaceRunning)
	require.True(t, ws.Status.StartedAt.After(ws.Status.StoppedAt.Time))

	uid := metering.StopPeriodUID(ws.UID, ws.Status.StoppedAt.Time)
	stopped := ws.Status.StartedAt.Sub(ws.Status.StoppedAt.Time).Seconds()
	var gibHours, ran float64
	framework.Eventually(t, 30*time.Second, "the stop period written to its end", func(ctx context.Context) (bool, error) {
		var ended bool
		err := pool.QueryRow(ctx, `SELECT coalesce(sum(volume_gib_hours), 0), coalesce(sum(running_seconds), 0),
			EXISTS (SELECT 1 FROM metered_ends WHERE uid = $1) FROM usage_intervals WHERE uid = $1`, uid).Scan(&gibHours, &ran, &ended)
		return ended, err
	})
	t.Logf("stopped %.0f s: %.6f GiB-hours charged", stopped, gibHours)
	assert.InDelta(t, 10*stopped/3600, gibHours, 1e-9, "10 GiB for the time stopped")
	assert.Zero(t, ran, "a stopped workspace runs no time")
	s, err := state(t.Context())
	require.NoError(t, err)
	assert.Equal(t, "running", s)

	require.NoError(t, env.Client.Delete(t.Context(), ws))
	framework.Eventually(t, time.Minute, "the Workspace gone, and marked deleted", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(ws), &berthv1alpha1.Workspace{})
		if !apierrors.IsNotFound(err) {
			return false, client.IgnoreNotFound(err)
		}
		s, err := state(ctx)
		return s == "deleted", err
	})
}
