package webhooks

import (
	"testing"

	"github.com/stretchr/testify/assert"
	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/utils/ptr"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
)

func TestQueueChanges(t *testing.T) {
	queued := testutil.Job("b").Class(berthv1alpha1.ClassBuild).Suspend(true).
		Annotation(AnnotationQueuedAt, "2026-11-22T00:00:00.000000001Z").Obj()
	tests := []struct {
		name   string
		old    *batchv1.Job
		update func(*batchv1.Job)
		want   []string // fields denied
	}{
		{"unsuspend", queued, func(j *batchv1.Job) { j.Spec.Suspend = ptr.To(false) }, []string{"spec.suspend"}},
		{"unsuspend by clearing", queued, func(j *batchv1.Job) { j.Spec.Suspend = nil }, []string{"spec.suspend"}},
		{"move up the queue", queued, func(j *batchv1.Job) { j.Annotations[AnnotationQueuedAt] = "2000-01-01T00:00:00Z" }, []string{"metadata.annotations[berth.dev/queued-at]"}},
		{"drop the label and unsuspend", queued, func(j *batchv1.Job) {
			delete(j.Labels, berthv1alpha1.LabelClass)
			j.Spec.Suspend = ptr.To(false)
		}, []string{"spec.suspend", "metadata.labels[berth.dev/class]"}},
		{"suspend again", queued, func(j *batchv1.Job) {}, nil},
		{"other edits", queued, func(j *batchv1.Job) { j.Labels["team"] = "x" }, nil},
		{"not queued by berth", testutil.Job("b").Class(berthv1alpha1.ClassBuild).Suspend(true).Obj(),
			func(j *batchv1.Job) { j.Spec.Suspend = ptr.To(false) }, nil},
		{"not a build", testutil.Job("w").Class(berthv1alpha1.ClassWorkspace).Suspend(true).Annotation(AnnotationQueuedAt, "x").Obj(),
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
