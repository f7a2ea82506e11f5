package webhooks

import (
	"testing"

	"github.com/stretchr/testify/assert"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
)

func TestQueueChanges(t *testing.T) {
	queued := testutil.Job("b").Class(berthv1alpha1.ClassBuild).Suspend(true).
		Annotation(berthv1alpha1.AnnotationQueuedAt, "2026-11-22T00:00:00.000000001Z").Obj()
	tests := []struct {
		name   string
		old    *batchv1.Job
		update func(*batchv1.Job)
		want   []string // fields denied
	}{
		{"unsuspend", queued, func(j *batchv1.Job) { j.Spec.Suspend = ptr.To(false) }, []string{"spec.suspend"}},
		{"unsuspend by clearing", queued, func(j *batchv1.Job) { j.Spec.Suspend = nil }, []string{"spec.suspend"}},
		{"move up the queue", queued, func(j *batchv1.Job) { j.Annotations[berthv1alpha1.AnnotationQueuedAt] = "2000-01-01T00:00:00Z" }, []string{"metadata.annotations[berth.dev/queued-at]"}},
		{"drop the label and unsuspend", queued, func(j *batchv1.Job) {
			delete(j.Labels, berthv1alpha1.LabelClass)
			j.Spec.Suspend = ptr.To(false)
		}, []string{"spec.suspend"}}, // the label is ValidateSystemLabels'
		{"change the template", queued, func(j *batchv1.Job) {
			j.Spec.Template.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
		}, []string{"spec.template"}},
		{"change the template's labels", queued, func(j *batchv1.Job) {
			j.Spec.Template.Labels = map[string]string{"x": "y"}
		}, []string{"spec.template"}},
		{"more Pods at once", queued, func(j *batchv1.Job) { j.Spec.Parallelism = ptr.To[int32](50) }, []string{"spec.parallelism"}},
		{"suspend again", queued, func(j *batchv1.Job) {}, nil},
		{"other edits", queued, func(j *batchv1.Job) { j.Labels["team"] = "x" }, nil},
		{"not queued by berth", testutil.Job("b").Class(berthv1alpha1.ClassBuild).Suspend(true).Obj(),
			func(j *batchv1.Job) { j.Spec.Suspend = ptr.To(false) }, nil},
		{"not a build", testutil.Job("w").Class(berthv1alpha1.ClassWorkspace).Suspend(true).Annotation(berthv1alpha1.AnnotationQueuedAt, "x").Obj(),
			func(j *batchv1.Job) { j.Spec.Suspend = ptr.To(false) }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			job := tc.old.DeepCopy()
			tc.update(job)
			var got []string
			for _, e := range QueueChanges(tc.old, job) {
				got = append(got, e.Field)
			}
			assert.ElementsMatch(t, tc.want, got)
		})
	}
}

func TestValidateSystemLabels(t *testing.T) {
	labels := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	class, org := berthv1alpha1.LabelClass, berthv1alpha1.LabelOrg
	tests := []struct {
		name     string
		old, new map[string]string
		want     []string
	}{
		{"unchanged", labels(class, "build", org, "acme"), labels(class, "build", org, "acme", "x", "y"), nil},
		{"class added", labels(org, "victim"), labels(org, "victim", class, "inference"), []string{"metadata.labels[berth.dev/class]"}},
		{"class changed", labels(class, "build"), labels(class, "workspace"), []string{"metadata.labels[berth.dev/class]"}},
		{"class removed", labels(class, "build"), nil, []string{"metadata.labels[berth.dev/class]"}},
		{"org changed", labels(class, "build", org, "acme"), labels(class, "build", org, "victim"), []string{"metadata.labels[berth.dev/org]"}},
		{"org removed", labels(class, "build", org, "acme"), labels(class, "build"), []string{"metadata.labels[berth.dev/org]"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, e := range ValidateSystemLabels(tc.old, tc.new, field.NewPath("metadata", "labels")) {
				got = append(got, e.Field)
				assert.Contains(t, e.Detail, "cannot be added, changed or removed")
			}
			assert.ElementsMatch(t, tc.want, got)
		})
	}
}

func TestIgnoreDisruptions(t *testing.T) {
	never := func() *batchv1.JobSpec {
		return &testutil.Job("b").Class(berthv1alpha1.ClassBuild).Obj().Spec
	}
	spec := never()
	spec.Template.Spec.RestartPolicy = corev1.RestartPolicyNever
	user := batchv1.PodFailurePolicyRule{Action: batchv1.PodFailurePolicyActionFailJob,
		OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{42}}}
	spec.PodFailurePolicy = &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{user}}
	spec.PodReplacementPolicy = ptr.To(batchv1.TerminatingOrFailed) // the API server's default
	ignoreDisruptions(spec)
	ignoreDisruptions(spec) // idempotent
	if assert.Len(t, spec.PodFailurePolicy.Rules, 2) {
		first := spec.PodFailurePolicy.Rules[0]
		assert.Equal(t, batchv1.PodFailurePolicyActionIgnore, first.Action, "the disruption rule goes first, before the user's")
		assert.Equal(t, corev1.DisruptionTarget, first.OnPodConditions[0].Type)
		assert.Equal(t, user, spec.PodFailurePolicy.Rules[1])
	}
	assert.Equal(t, ptr.To(batchv1.Failed), spec.PodReplacementPolicy, "the only replacement policy allowed with a pod failure policy")

	onFailure := never()
	onFailure.Template.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	ignoreDisruptions(onFailure)
	assert.Nil(t, onFailure.PodFailurePolicy, "the API server allows a podFailurePolicy only with restartPolicy Never")
}
