package webhooks

import (
	"context"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// AnnotationQueuedAt marks a build Job berth queued, with the time it was
// admitted; queued builds are released oldest first.
const AnnotationQueuedAt = "berth.dev/queued-at"

// JobWebhook mutates labelled Jobs' pod templates, queues builds, and keeps
// users from releasing their own queued builds.
type JobWebhook struct {
	Resolver *Resolver
	Now      func() time.Time
}

var (
	_ admission.Defaulter[*batchv1.Job] = &JobWebhook{}
	_ admission.Validator[*batchv1.Job] = &JobWebhook{}
)

var jobKind = batchv1.SchemeGroupVersion.WithKind("Job").GroupKind()

// Default mutates the pod template, so that Job-level tools see the real Pod,
// and admits builds suspended, to be released by the build queue.
func (w *JobWebhook) Default(ctx context.Context, job *batchv1.Job) error {
	d := begin(ctx, "Job", "mutate", job.Name)
	if d.skip(w.Resolver.Config, job.Labels) {
		return nil
	}
	t, err := d.target(ctx, w.Resolver, jobKind, job.Name)
	if err != nil {
		return err
	}
	job.Labels[berthv1alpha1.LabelOrg] = t.Org.Name
	tmpl := &job.Spec.Template
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	for _, k := range []string{berthv1alpha1.LabelClass, berthv1alpha1.LabelUser, berthv1alpha1.LabelProject, berthv1alpha1.LabelWorkspace} {
		if v, ok := job.Labels[k]; ok {
			tmpl.Labels[k] = v
		}
	}
	MutatePod(&tmpl.ObjectMeta, &tmpl.Spec, *t)
	if t.Class == berthv1alpha1.ClassBuild && d.operation == "CREATE" {
		job.Spec.Suspend = ptr.To(true)
		// berth's clock decides the order, never a value the user wrote.
		setAnnotation(&job.ObjectMeta, AnnotationQueuedAt, w.now().UTC().Format(time.RFC3339Nano))
	}
	return d.allow()
}

// ValidateCreate checks the mutated pod template.
func (w *JobWebhook) ValidateCreate(ctx context.Context, job *batchv1.Job) (admission.Warnings, error) {
	d := begin(ctx, "Job", "validate", job.Name)
	if d.skip(w.Resolver.Config, job.Labels) {
		return nil, nil
	}
	t, err := d.target(ctx, w.Resolver, jobKind, job.Name)
	if err != nil {
		return nil, err
	}
	t.Project = job.Spec.Template.Labels[berthv1alpha1.LabelProject]
	if t.Project == "" {
		t.Project = job.Labels[berthv1alpha1.LabelProject]
	}
	if errs := ValidatePod(&job.Spec.Template.Spec, *t, field.NewPath("spec", "template", "spec")); len(errs) > 0 {
		return nil, d.deny(reasonOf(errs[0]), apierrors.NewInvalid(jobKind, job.Name, errs))
	}
	return nil, d.allow()
}

// ValidateUpdate keeps the build queue berth's: only berth-manager
// unsuspends a queued build or changes its place in the queue.
func (w *JobWebhook) ValidateUpdate(ctx context.Context, old, job *batchv1.Job) (admission.Warnings, error) {
	d := begin(ctx, "Job", "validate", job.Name)
	// Judge by the stored Job: dropping the label in the same update must not
	// open the way.
	if d.skip(w.Resolver.Config, old.Labels) {
		return nil, nil
	}
	d.org = old.Labels[berthv1alpha1.LabelOrg]
	errs := QueueChanges(old, job)
	if len(errs) == 0 {
		return nil, nil
	}
	req, err := admission.RequestFromContext(ctx)
	if err == nil && req.UserInfo.Username == w.Resolver.Config.ManagerUsername {
		return nil, d.allow()
	}
	return nil, d.deny("queue", apierrors.NewInvalid(jobKind, job.Name, errs))
}

// QueueChanges lists what an update does to a queued build that only berth
// may do: unsuspend it, or change its class label or queued-at annotation.
func QueueChanges(old, job *batchv1.Job) field.ErrorList {
	if old.Labels[berthv1alpha1.LabelClass] != string(berthv1alpha1.ClassBuild) || old.Annotations[AnnotationQueuedAt] == "" {
		return nil
	}
	var errs field.ErrorList
	org := old.Labels[berthv1alpha1.LabelOrg]
	if ptr.Deref(old.Spec.Suspend, false) && !ptr.Deref(job.Spec.Suspend, false) {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "suspend"), fmt.Sprintf(
			"build Job %s is queued for a build slot of Organization %q (spec.maxConcurrentBuilds); berth releases queued builds in the order they came (queued at %s); wait for it, or delete it",
			job.Name, org, old.Annotations[AnnotationQueuedAt])))
	}
	if job.Annotations[AnnotationQueuedAt] != old.Annotations[AnnotationQueuedAt] {
		errs = append(errs, field.Forbidden(field.NewPath("metadata", "annotations").Key(AnnotationQueuedAt),
			"berth sets a build's place in the queue; leave this annotation as it is"))
	}
	if job.Labels[berthv1alpha1.LabelClass] != old.Labels[berthv1alpha1.LabelClass] {
		errs = append(errs, field.Forbidden(field.NewPath("metadata", "labels").Key(berthv1alpha1.LabelClass),
			"the class of a queued build cannot change; delete the Job and submit it again"))
	}
	return errs
}

// ValidateDelete allows every deletion.
func (w *JobWebhook) ValidateDelete(context.Context, *batchv1.Job) (admission.Warnings, error) {
	return nil, nil
}

func (w *JobWebhook) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// QueuedAt is when a queued build was admitted; zero when it is not queued.
func QueuedAt(job *batchv1.Job) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, job.Annotations[AnnotationQueuedAt])
	return t
}
