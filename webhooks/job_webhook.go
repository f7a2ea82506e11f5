package webhooks

import (
	"context"
	"fmt"
	"slices"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// JobWebhook mutates labelled Jobs' pod templates, queues builds, and keeps
// users from releasing or changing their queued builds.
type JobWebhook struct {
	Resolver *Resolver
	Clock    clock.PassiveClock
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
		setAnnotation(&job.ObjectMeta, berthv1alpha1.AnnotationQueuedAt, w.Clock.Now().UTC().Format(time.RFC3339Nano))
		ignoreDisruptions(&job.Spec)
	}
	return d.allow()
}

// maxPodFailureRules is the API server's limit on a Job's
// podFailurePolicy rules.
const maxPodFailureRules = 20

// ignoreDisruptions makes a build whose Pod is lost with its node (a
// reclaimed spot node, a drain, a preemption) run again without using up
// its backoffLimit: a rule that ignores DisruptionTarget failures goes
// first in the Job's podFailurePolicy, and the Job replaces a Pod once it
// has failed (podReplacementPolicy Failed, the only one the API server
// allows with a policy). The API server allows the policy only with
// restartPolicy Never, and it cannot change after the create.
func ignoreDisruptions(spec *batchv1.JobSpec) {
	if spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		return
	}
	rule := batchv1.PodFailurePolicyRule{
		Action: batchv1.PodFailurePolicyActionIgnore,
		OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{{
			Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue,
		}},
	}
	if spec.PodFailurePolicy == nil {
		spec.PodFailurePolicy = &batchv1.PodFailurePolicy{}
	}
	rules := spec.PodFailurePolicy.Rules
	if slices.ContainsFunc(rules, func(r batchv1.PodFailurePolicyRule) bool { return equality.Semantic.DeepEqual(r, rule) }) ||
		len(rules) >= maxPodFailureRules {
		return
	}
	spec.PodFailurePolicy.Rules = append([]batchv1.PodFailurePolicyRule{rule}, rules...)
	// With a pod failure policy, a Job replaces a Pod only once it has
	// failed; the API server defaulted the Job before berth saw it, for no
	// policy.
	spec.PodReplacementPolicy = ptr.To(batchv1.Failed)
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
	tmpl := &job.Spec.Template
	if errs, reason := validatePod(&tmpl.ObjectMeta, &tmpl.Spec, *t, field.NewPath("spec", "template", "spec")); len(errs) > 0 {
		return nil, d.deny(reason, apierrors.NewInvalid(jobKind, job.Name, errs))
	}
	return nil, d.allow()
}

// ValidateUpdate keeps berth's labels fixed, and the build queue berth's:
// only berth-manager releases a queued build, and no one changes a build's
// place in the queue or what it runs. The API server calls it only for
// updates that touch any of these (see Configurations), so the garbage
// collector's and the Job controller's updates never wait on berth.
func (w *JobWebhook) ValidateUpdate(ctx context.Context, old, job *batchv1.Job) (admission.Warnings, error) {
	d := begin(ctx, "Job", "validate", job.Name)
	d.class = old.Labels[berthv1alpha1.LabelClass]
	d.org = w.Resolver.OrgName(ctx, d.namespace)
	errs := ValidateSystemLabels(old.Labels, job.Labels, field.NewPath("metadata", "labels"))
	if len(errs) > 0 {
		return nil, d.deny(reasonLabels, apierrors.NewInvalid(jobKind, job.Name, errs))
	}
	errs = QueueChanges(old, job)
	if len(errs) == 0 {
		return nil, nil
	}
	req, err := admission.RequestFromContext(ctx)
	if err == nil && req.UserInfo.Username == w.Resolver.Config.ManagerUsername {
		return nil, d.allow()
	}
	return nil, d.deny(reasonQueue, apierrors.NewInvalid(jobKind, job.Name, errs))
}

// QueueChanges lists what an update does to a berth build that only berth
// may do: unsuspend it while it is queued, move its place in the queue, or
// change what it runs (its pod template, parallelism or completions).
func QueueChanges(old, job *batchv1.Job) field.ErrorList {
	queuedAt := old.Annotations[berthv1alpha1.AnnotationQueuedAt]
	if old.Labels[berthv1alpha1.LabelClass] != string(berthv1alpha1.ClassBuild) || queuedAt == "" {
		return nil
	}
	var errs field.ErrorList
	spec := field.NewPath("spec")
	if ptr.Deref(old.Spec.Suspend, false) && !ptr.Deref(job.Spec.Suspend, false) {
		errs = append(errs, field.Forbidden(spec.Child("suspend"), fmt.Sprintf(
			"build Job %s is queued for a build slot of its Organization (spec.maxConcurrentBuilds); berth releases queued builds in the order they came (queued at %s); wait for it, or delete it",
			job.Name, queuedAt)))
	}
	if job.Annotations[berthv1alpha1.AnnotationQueuedAt] != queuedAt {
		errs = append(errs, field.Forbidden(field.NewPath("metadata", "annotations").Key(berthv1alpha1.AnnotationQueuedAt),
			"berth sets a build's place in the queue; leave this annotation as it is"))
	}
	const resubmit = "a build cannot change once berth admitted it; delete the Job and submit the changed one"
	if !equality.Semantic.DeepEqual(old.Spec.Template, job.Spec.Template) {
		errs = append(errs, field.Forbidden(spec.Child("template"), resubmit))
	}
	if !equality.Semantic.DeepEqual(old.Spec.Parallelism, job.Spec.Parallelism) {
		errs = append(errs, field.Forbidden(spec.Child("parallelism"), resubmit))
	}
	if !equality.Semantic.DeepEqual(old.Spec.Completions, job.Spec.Completions) {
		errs = append(errs, field.Forbidden(spec.Child("completions"), resubmit))
	}
	return errs
}

// ValidateDelete allows every deletion.
func (w *JobWebhook) ValidateDelete(context.Context, *batchv1.Job) (admission.Warnings, error) {
	return nil, nil
}
