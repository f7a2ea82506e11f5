// Package workspaces proves berth's workspace life cycle on the local
// cluster, with berth-manager's webhooks and controllers running: a
// labelled Pod becomes a Workspace, a user's delete is a stop, an idle
// workspace stops and a heartbeat keeps one alive, a wake goes through
// admission (and a quota refuses it with a message), and the workspaces of
// a deleted node come back on others with the same claims. A build whose
// node is deleted runs again too, without using up its backoffLimit.
package workspaces

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// metrics-server serves the CPU use kwok reports, for the busy workspace.
func TestMain(m *testing.M) { framework.Main(m, framework.WithMetricsServer()) }

var (
	managerMu sync.Mutex
	manager   *framework.Process
)

// setup returns the package's cluster and starts its berth-manager once:
// webhooks, orgstatus, the build queue and the workspaces controller; the
// stock scheduler places the Pods.
func setup(t *testing.T) *framework.ClusterEnv {
	t.Helper()
	env := framework.Cluster(t)
	managerMu.Lock()
	defer managerMu.Unlock()
	if manager == nil {
		manager = framework.StartPackageManager(t, env, framework.ManagerOptions{
			Args: []string{"--scheduler-name=", "--controllers=orgstatus,buildqueue,workspaces", "--v=1"},
		})
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("berth-manager's log ends:\n%s", manager.Tail(60))
		}
	})
	return env
}

// workspace is a started Workspace of user ana whose Pod mounts claim, if
// one is named, at /home.
func workspace(ns, name, claim string) *berthv1alpha1.Workspace {
	pod := testutil.Pod(name).Class(berthv1alpha1.ClassWorkspace).User("ana").Obj()
	if claim != "" {
		mountClaim(pod, claim)
	}
	return &berthv1alpha1.Workspace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: berthv1alpha1.WorkspaceSpec{Started: true, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels},
			Spec:       pod.Spec,
		}},
	}
}

func mountClaim(pod *corev1.Pod, claim string) {
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "home", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim},
	}})
	pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "home", MountPath: "/home"})
}

// claim makes a PersistentVolumeClaim bound to a PersistentVolume of its
// own (the local cluster has no provisioner) and returns its name.
func claim(t *testing.T, env *framework.ClusterEnv, ns, name string) string {
	t.Helper()
	pv := volumeFor(t, env, ns, name)
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: new(string),
			VolumeName:       pv.Name,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: claimSize}},
		},
	}
	require.NoError(t, env.Client.Create(t.Context(), pvc))
	return name
}

var claimSize = resource.MustParse("1Gi")

// volumeFor makes a PersistentVolume for the claim ns/name, which may not
// exist yet (a generic ephemeral volume's).
func volumeFor(t *testing.T, env *framework.ClusterEnv, ns, name string) *corev1.PersistentVolume {
	t.Helper()
	size := claimSize
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:         corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: "",
			ClaimRef:         &corev1.ObjectReference{Namespace: ns, Name: name},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: "/tmp/" + ns + "-" + name},
			},
		},
	}
	env.Create(t, pv)
	return pv
}

// waitPhase waits until the Workspace is in phase and returns it.
func waitPhase(t *testing.T, env *framework.ClusterEnv, ns, name string, phase berthv1alpha1.WorkspacePhase, timeout time.Duration) *berthv1alpha1.Workspace {
	t.Helper()
	ws := &berthv1alpha1.Workspace{}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		// What the workspace and its Pods were doing, for a failure.
		t.Logf("Workspace %s/%s: phase %q, message %q", ns, name, ws.Status.Phase, ws.Status.Message)
		var list corev1.PodList
		if err := env.Client.List(context.Background(), &list, client.InNamespace(ns)); err == nil {
			for _, p := range list.Items {
				t.Logf("Pod %s: phase %s, node %q, deleting %t, conditions %+v", p.Name, p.Status.Phase, p.Spec.NodeName, p.DeletionTimestamp != nil, p.Status.Conditions)
			}
		}
	})
	framework.Eventually(t, timeout, fmt.Sprintf("Workspace %s/%s %s", ns, name, phase), func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ws)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil && ws.Status.Phase == phase, err
	})
	return ws
}

// setStarted sets a Workspace's spec.started, as kubectl patch would.
func setStarted(t *testing.T, env *framework.ClusterEnv, ns, name string, started bool) {
	t.Helper()
	ws := &berthv1alpha1.Workspace{}
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, ws))
	patch := client.MergeFrom(ws.DeepCopy())
	ws.Spec.Started = started
	require.NoError(t, env.Client.Patch(t.Context(), ws, patch))
}

// pods lists the Pods of a namespace that are not being deleted.
func pods(t *testing.T, env *framework.ClusterEnv, ns string) []corev1.Pod {
	t.Helper()
	var list corev1.PodList
	require.NoError(t, env.Client.List(t.Context(), &list, client.InNamespace(ns)))
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}
