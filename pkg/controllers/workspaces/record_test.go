package workspaces

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
)

func TestTemplateFromPod(t *testing.T) {
	pod := testutil.Pod("ide").Namespace("team").Class(berthv1alpha1.ClassWorkspace).User("ana").
		Label(berthv1alpha1.LabelOrg, "acme").
		Annotation(berthv1alpha1.AnnotationQuota, berthv1alpha1.QuotaCharged).
		Annotation(berthv1alpha1.AnnotationLastActivity, "2026-12-01T10:00:00Z").
		Annotation("team.example/keep", "yes").Obj()
	pod.Spec.NodeName = "spot-1"
	pod.Spec.Priority = ptr.To[int32](100)
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "home", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "ana-home"}}},
		{Name: "scratch", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}},
		{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}},
	}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{
		{Name: "home", MountPath: "/home"},
		{Name: "kube-api-access-x7k2p", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"},
	}

	tmpl := TemplateFromPod(pod)
	assert.Empty(t, tmpl.Spec.NodeName, "a new Pod is placed again")
	assert.Nil(t, tmpl.Spec.Priority, "the Priority admission plugin sets it again")
	assert.Equal(t, []string{"ana-home", "ide-scratch"}, Claims(&tmpl), "an ephemeral volume becomes a claim of the PVC made for it")
	assert.Len(t, tmpl.Spec.Volumes, 2, "the token volume is the API server's to add")
	assert.Equal(t, []corev1.VolumeMount{{Name: "home", MountPath: "/home"}}, tmpl.Spec.Containers[0].VolumeMounts)
	assert.Equal(t, map[string]string{"team.example/keep": "yes"}, tmpl.Annotations, "berth's per-run annotations go")
	assert.Equal(t, "ana", tmpl.Labels[berthv1alpha1.LabelUser])
	assert.Equal(t, "spot-1", pod.Spec.NodeName, "the Pod itself is not changed")
}

func TestPodFor(t *testing.T) {
	ws := &berthv1alpha1.Workspace{
		ObjectMeta: metav1.ObjectMeta{Name: "ide", Namespace: "team", UID: "ws-uid"},
		Spec: berthv1alpha1.WorkspaceSpec{Started: true, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{
				berthv1alpha1.LabelClass: "build", berthv1alpha1.LabelOrg: "victim", "app": "ide",
			}},
			Spec: corev1.PodSpec{NodeName: "gpu-1", Containers: []corev1.Container{{Name: "main", Image: testutil.DefaultImage}}},
		}},
	}
	pod := PodFor(ws, "ide-abcde")
	assert.Equal(t, "team", pod.Namespace)
	assert.Equal(t, "ide-abcde", pod.Name)
	assert.Equal(t, map[string]string{
		berthv1alpha1.LabelClass: "workspace", berthv1alpha1.LabelWorkspace: "ide", "app": "ide",
	}, pod.Labels, "the class is always workspace, and the org the namespace's")
	assert.Empty(t, pod.Spec.NodeName, "a template cannot pick its node")
	require.NotNil(t, metav1.GetControllerOf(pod))
	assert.Equal(t, ws.UID, metav1.GetControllerOf(pod).UID)
	assert.True(t, OwnedBy(pod, ws))
	assert.Equal(t, "ide", workspaceOf(pod))
	assert.Equal(t, "build", ws.Spec.Template.Labels[berthv1alpha1.LabelClass], "the template is not changed")
}

func TestWorkspaceOf(t *testing.T) {
	assert.Equal(t, "ide", workspaceOf(testutil.Pod("ide").Class(berthv1alpha1.ClassWorkspace).Obj()))
	assert.Equal(t, "mine", workspaceOf(testutil.Pod("ide").Class(berthv1alpha1.ClassWorkspace).Workspace("mine").Obj()))
	assert.Empty(t, workspaceOf(testutil.Pod("b").Class(berthv1alpha1.ClassBuild).Obj()))
	owned := testutil.Pod("ide").Class(berthv1alpha1.ClassWorkspace).Obj()
	owned.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", Controller: ptr.To(true)}}
	assert.Empty(t, workspaceOf(owned), "a Pod another controller owns is not adopted")
}

func TestLossReason(t *testing.T) {
	pod := testutil.Pod("ide").Obj()
	pod.Spec.NodeName = "spot-1"
	assert.Empty(t, LossReason(pod, false), "a plain delete is a stop")
	assert.Contains(t, LossReason(pod, true), "node spot-1 is gone")

	disrupted := pod.DeepCopy()
	disrupted.Status.Conditions = []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "DeletionByTaintManager", Message: "Taint manager: deleting due to NoExecute taint"}}
	assert.Contains(t, LossReason(disrupted, false), "DeletionByTaintManager")

	evicted := pod.DeepCopy()
	evicted.Status.Phase, evicted.Status.Reason, evicted.Status.Message = corev1.PodFailed, "Evicted", "The node was low on resource: memory."
	assert.Contains(t, LossReason(evicted, false), "low on resource")

	exited := pod.DeepCopy()
	exited.Status.Phase = corev1.PodSucceeded
	assert.Empty(t, LossReason(exited, false), "a workspace that exited stopped")
}

func TestActivity(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	ws := &berthv1alpha1.Workspace{ObjectMeta: metav1.ObjectMeta{Name: "ide"}}
	ws.Status.StartedAt = &metav1.Time{Time: t0}
	pod := testutil.Pod("ide-x").Obj()
	pod.Status.StartTime = &metav1.Time{Time: t0.Add(time.Second)}

	now := t0.Add(3 * time.Hour)
	got, err := Activity(ws, pod, now)
	require.NoError(t, err)
	assert.Equal(t, t0.Add(time.Second), got, "the Pod's start")

	pod.Annotations = map[string]string{berthv1alpha1.AnnotationLastActivity: t0.Add(time.Hour).Format(time.RFC3339)}
	got, _ = Activity(ws, pod, now)
	assert.Equal(t, t0.Add(time.Hour), got, "the heartbeat")

	ws.Annotations = map[string]string{berthv1alpha1.AnnotationLastActivity: t0.Add(2 * time.Hour).Format(time.RFC3339)}
	got, _ = Activity(ws, pod, now)
	assert.Equal(t, t0.Add(2*time.Hour), got, "a touch on the Workspace")

	pod.Annotations[berthv1alpha1.AnnotationLastActivity] = "yesterday"
	got, err = Activity(ws, pod, now)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `berth.dev/last-activity="yesterday"`)
	assert.Contains(t, err.Error(), "RFC 3339")
	assert.Equal(t, t0.Add(2*time.Hour), got, "a malformed heartbeat is ignored")

	got, err = Activity(ws, nil, now)
	require.NoError(t, err)
	assert.Equal(t, t0.Add(2*time.Hour), got)

	// A heartbeat far in the future would keep the workspace from ever
	// being idle: it is ignored.
	ws.Annotations[berthv1alpha1.AnnotationLastActivity] = now.Add(24 * time.Hour).Format(time.RFC3339)
	got, err = Activity(ws, nil, now)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no later than now")
	assert.Equal(t, t0, got)
	ws.Annotations[berthv1alpha1.AnnotationLastActivity] = now.Add(30 * time.Second).Format(time.RFC3339)
	got, err = Activity(ws, nil, now)
	require.NoError(t, err, "a clock a little ahead is fine")
	assert.Equal(t, now.Add(30*time.Second), got)

	ws.Annotations[berthv1alpha1.AnnotationLastActivity] = strings.Repeat("x", 100000)
	_, err = Activity(ws, nil, now)
	require.Error(t, err)
	assert.Less(t, len(err.Error()), 400, "a huge annotation is not copied into events and logs")

	ws.Annotations = nil
	ws.Status.LastActivity = &metav1.Time{Time: t0.Add(90 * time.Minute)}
	got, _ = Activity(ws, nil, now)
	assert.Equal(t, t0.Add(90*time.Minute), got, "the activity berth recorded for CPU use")
}
