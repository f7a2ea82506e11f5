package workspaces

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// tokenVolumePrefix names the service account token volume the API server
// adds to every Pod; a new Pod gets its own.
const tokenVolumePrefix = "kube-api-access-"

// recordedAnnotations are dropped from a Pod's metadata when it becomes a
// template: berth's admission or the next run sets them anew.
var recordedAnnotations = []string{
	berthv1alpha1.AnnotationQuota,
	berthv1alpha1.AnnotationLastActivity,
	"kubectl.kubernetes.io/last-applied-configuration",
}

// MaxClockSkew is how far in the future a heartbeat may be and still
// count: the gateway's clock may run a little ahead of berth's.
const MaxClockSkew = time.Minute

// WorkspaceName is the name of the Workspace a labelled workspace Pod
// belongs to: its berth.dev/workspace label, or else its own name.
func WorkspaceName(pod *corev1.Pod) string {
	if ws := pod.Labels[berthv1alpha1.LabelWorkspace]; ws != "" {
		return ws
	}
	return pod.Name
}

// TemplateFromPod records what recreates pod: its spec less what binds it
// to one node and one run, and its labels and annotations less berth's
// per-run ones. A generic ephemeral volume becomes a claim of the PVC the
// API server made for it ({pod}-{volume}), so the data outlives the Pod.
func TemplateFromPod(pod *corev1.Pod) corev1.PodTemplateSpec {
	spec := pod.Spec.DeepCopy()
	spec.NodeName = ""
	spec.EphemeralContainers = nil
	// The Priority admission plugin sets these from the PriorityClass again.
	spec.Priority = nil
	spec.PreemptionPolicy = nil
	var token []string
	spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v corev1.Volume) bool {
		if strings.HasPrefix(v.Name, tokenVolumePrefix) && v.Projected != nil {
			token = append(token, v.Name)
			return true
		}
		return false
	})
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		if v.Ephemeral != nil {
			v.VolumeSource = corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
				ClaimName: pod.Name + "-" + v.Name,
			}}
		}
	}
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			cs[i].VolumeMounts = slices.DeleteFunc(cs[i].VolumeMounts, func(m corev1.VolumeMount) bool {
				return slices.Contains(token, m.Name)
			})
		}
	}
	meta := metav1.ObjectMeta{Labels: map[string]string{}, Annotations: map[string]string{}}
	for k, v := range pod.Labels {
		meta.Labels[k] = v
	}
	for k, v := range pod.Annotations {
		if !slices.Contains(recordedAnnotations, k) {
			meta.Annotations[k] = v
		}
	}
	return corev1.PodTemplateSpec{ObjectMeta: meta, Spec: *spec}
}

// PodFor returns the Pod that starts ws, named name: its template, owned by
// ws, labelled a workspace of that name.
func PodFor(ws *berthv1alpha1.Workspace, name string) *corev1.Pod {
	t := ws.Spec.Template.DeepCopy()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   ws.Namespace,
			Labels:      t.Labels,
			Annotations: t.Annotations,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: berthv1alpha1.SchemeGroupVersion.String(),
				Kind:       "Workspace",
				Name:       ws.Name,
				UID:        ws.UID,
				Controller: ptr.To(true),
				// Deleting the Workspace deletes its Pod; nothing waits.
				BlockOwnerDeletion: ptr.To(false),
			}},
		},
		Spec: t.Spec,
	}
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[berthv1alpha1.LabelClass] = string(berthv1alpha1.ClassWorkspace)
	pod.Labels[berthv1alpha1.LabelWorkspace] = ws.Name
	// The namespace decides the org; the webhook writes it.
	delete(pod.Labels, berthv1alpha1.LabelOrg)
	pod.Spec.NodeName = ""
	return pod
}

// Claims lists the PersistentVolumeClaims a template mounts, in order.
func Claims(t *corev1.PodTemplateSpec) []string {
	var out []string
	for _, v := range t.Spec.Volumes {
		if v.PersistentVolumeClaim != nil && !slices.Contains(out, v.PersistentVolumeClaim.ClaimName) {
			out = append(out, v.PersistentVolumeClaim.ClaimName)
		}
	}
	return out
}

// OwnedBy reports whether ws controls pod.
func OwnedBy(pod *corev1.Pod, ws *berthv1alpha1.Workspace) bool {
	ref := metav1.GetControllerOf(pod)
	return ref != nil && ref.UID == ws.UID
}

// owner is the name of the Workspace that controls pod, or "".
func owner(pod *corev1.Pod) string {
	ref := metav1.GetControllerOf(pod)
	if ref == nil || ref.Kind != "Workspace" || !strings.HasPrefix(ref.APIVersion, berthv1alpha1.GroupName+"/") {
		return ""
	}
	return ref.Name
}

// LossReason says why a Pod that is going or gone was lost with its node,
// or returns "" when its going is a stop: a user's delete, or a workspace
// that exited. A Pod is lost when the API server marked it a disruption
// (taint manager, Pod GC, eviction, preemption, kubelet shutdown), when
// the kubelet evicted it, or when its node no longer exists.
func LossReason(pod *corev1.Pod, nodeGone bool) string {
	if nodeGone {
		return fmt.Sprintf("node %s is gone", pod.Spec.NodeName)
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.DisruptionTarget && c.Status == corev1.ConditionTrue {
			return fmt.Sprintf("%s: %s", c.Reason, c.Message)
		}
	}
	if pod.Status.Phase == corev1.PodFailed && pod.Status.Reason == "Evicted" {
		return "evicted by the kubelet: " + pod.Status.Message
	}
	return ""
}

// Activity is the workspace's last activity: the newest of the Pod's
// heartbeat annotation (berth.dev/last-activity, RFC 3339), the same
// annotation on the Workspace (kubectl berth touch), the Pod's start, the
// last start berth made, and the activity berth recorded (CPU use).
//
// A malformed heartbeat, or one later than now by more than MaxClockSkew
// (which would keep the workspace from ever being idle), is ignored and
// returned as the error.
func Activity(ws *berthv1alpha1.Workspace, pod *corev1.Pod, now time.Time) (time.Time, error) {
	var last time.Time
	later := func(t time.Time) {
		if t.After(last) {
			last = t
		}
	}
	for _, t := range []*metav1.Time{ws.Status.StartedAt, ws.Status.LastActivity} {
		if t != nil {
			later(t.Time)
		}
	}
	if pod != nil && pod.Status.StartTime != nil {
		later(pod.Status.StartTime.Time)
	}
	objs := []metav1.Object{ws}
	if pod != nil {
		objs = append(objs, pod)
	}
	var bad error
	for _, obj := range objs {
		v, ok := obj.GetAnnotations()[berthv1alpha1.AnnotationLastActivity]
		if !ok {
			continue
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil || t.After(now.Add(MaxClockSkew)) {
			// The value is the user's: quote at most a few bytes of it into
			// berth's events and logs.
			if len(v) > 40 {
				v = v[:40] + "..."
			}
			bad = fmt.Errorf("annotation %s=%q on %s is not an RFC 3339 time no later than now, such as %s; the heartbeat is ignored until it is",
				berthv1alpha1.AnnotationLastActivity, v, obj.GetName(), now.UTC().Format(time.RFC3339))
			continue
		}
		later(t)
	}
	return last, bad
}
