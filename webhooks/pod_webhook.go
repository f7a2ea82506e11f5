package webhooks

import (
	"context"
	"errors"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/controllers"
	"berth.dev/berth/pkg/quota"
	"berth.dev/berth/pkg/requests"
)

// Ledger charges Pods against their org's workspace and GPU quotas.
type Ledger interface {
	// Reserve charges the Pod with uid, or fails with a
	// *quota.ExceededError.
	Reserve(ctx context.Context, org *berthv1alpha1.Organization, uid types.UID, e quota.Entry) error
	// Fits is Reserve without the write, for dry runs.
	Fits(ctx context.Context, org *berthv1alpha1.Organization, uid types.UID, e quota.Entry) error
}

// PodWebhook mutates and validates labelled Pods, and charges workspace and
// GPU quota.
type PodWebhook struct {
	Resolver *Resolver
	Ledger   Ledger
	// Audit records each quota denial for the org's audit log.
	Audit *controllers.Auditor
}

var (
	_ admission.Defaulter[*corev1.Pod] = &PodWebhook{}
	_ admission.Validator[*corev1.Pod] = &PodWebhook{}
)

// Default is the mutating webhook, on creates. It also validates: the
// validating webhook sees only the creates of Pods that count against a
// limit, so every other Pod is checked here, as mutated. A later webhook
// that changes the Pod makes the API server call this one again.
func (w *PodWebhook) Default(ctx context.Context, pod *corev1.Pod) error {
	d := begin(ctx, "Pod", "mutate", pod.Name)
	if d.skip(w.Resolver.Config, pod.Labels) {
		return nil
	}
	t, err := d.target(ctx, w.Resolver, podKind, pod.Name)
	if err != nil {
		return err
	}
	MutatePod(&pod.ObjectMeta, &pod.Spec, *t)
	if w.Resolver.Config.MeteringFinalizer && d.operation == "CREATE" {
		controllerutil.AddFinalizer(pod, berthv1alpha1.FinalizerMetering)
	}
	if err := w.validate(ctx, d, pod, t); err != nil {
		return err
	}
	return d.allow()
}

// ValidateCreate checks the final Pod and charges its quota. The API server
// calls it only for Pods marked AnnotationQuota.
func (w *PodWebhook) ValidateCreate(ctx context.Context, pod *corev1.Pod) (admission.Warnings, error) {
	d := begin(ctx, "Pod", "validate", pod.Name)
	if d.skip(w.Resolver.Config, pod.Labels) {
		return nil, nil
	}
	t, err := d.target(ctx, w.Resolver, podKind, pod.Name)
	if err != nil {
		return nil, err
	}
	if err := w.validate(ctx, d, pod, t); err != nil {
		return nil, err
	}
	gpus := requests.GPUs(&pod.Spec)
	if !quota.Limited(t.Org, t.Class, gpus) {
		return nil, d.allow()
	}
	if pod.UID == "" {
		return nil, d.fail(errors.New("the API server sent a Pod without a UID; berth charges quota by UID"))
	}
	if taken, err := w.nameTaken(ctx, pod); err != nil {
		return nil, d.fail(err)
	} else if taken {
		// The API server would refuse it after berth charged it: refuse it
		// first, and charge nothing.
		return nil, d.deny(reasonQuota, apierrors.NewAlreadyExists(corev1.Resource("pods"), pod.Name))
	}
	entry := quota.Entry{Class: t.Class, GPUs: gpus}
	if d.dryRun {
		err = w.Ledger.Fits(ctx, t.Org, pod.UID, entry)
	} else {
		err = w.Ledger.Reserve(ctx, t.Org, pod.UID, entry)
	}
	var exceeded *quota.ExceededError
	if errors.As(err, &exceeded) {
		if !d.dryRun {
			// No Pod name: the same denial repeated is one Event with a
			// count, so a burst of refused creates costs one write.
			w.Audit.Record(t.Org, nil, corev1.EventTypeWarning, berthv1alpha1.AuditQuotaDenied, "Admit",
				"a %s Pod of user %q in namespace %s refused: %v", t.Class, pod.Labels[berthv1alpha1.LabelUser], pod.Namespace, exceeded)
		}
		return nil, d.deny(reasonQuota, apierrors.NewForbidden(corev1.Resource("pods"), pod.Name, exceeded))
	}
	if err != nil {
		return nil, d.fail(err)
	}
	return nil, d.allow()
}

// validate runs ValidatePod on a mutated Pod, and, for a build, checks that
// it belongs to a build Job berth admitted and released. It records a
// denial or a failure; the caller records the allowance.
func (w *PodWebhook) validate(ctx context.Context, d *decision, pod *corev1.Pod, t *Target) error {
	t.Project = pod.Labels[berthv1alpha1.LabelProject]
	if errs, reason := validatePod(&pod.ObjectMeta, &pod.Spec, *t, field.NewPath("spec")); len(errs) > 0 {
		return d.deny(reason, apierrors.NewInvalid(podKind, pod.Name, errs))
	}
	if t.Class == berthv1alpha1.ClassBuild {
		ferr, err := w.checkBuildOwner(ctx, d.namespace, &pod.ObjectMeta)
		if err != nil {
			return d.fail(err)
		}
		if ferr != nil {
			return d.deny(reasonQueue, apierrors.NewInvalid(podKind, pod.Name, field.ErrorList{ferr}))
		}
	}
	return nil
}

// checkBuildOwner makes every build go through the queue: a build Pod must
// be controlled by a build Job berth admitted (one carrying
// AnnotationQueuedAt) and has released, and match that Job's selector, so
// that the Job controller counts it. Neither a bare Pod, nor the Pod of a
// Job that only its template labels a build, nor a Pod that names a queued
// Job as its owner, is a build.
func (w *PodWebhook) checkBuildOwner(ctx context.Context, ns string, meta *metav1.ObjectMeta) (*field.Error, error) {
	ref := metav1.GetControllerOf(meta)
	path := field.NewPath("metadata", "ownerReferences")
	if ref == nil || ref.Kind != "Job" || ref.APIVersion != batchv1.SchemeGroupVersion.String() {
		return field.Forbidden(path, fmt.Sprintf(
			"a %s=build Pod runs only as part of a build Job, which berth queues for the org's build slots; submit a Job labelled %s=build instead of a bare Pod",
			berthv1alpha1.LabelClass, berthv1alpha1.LabelClass)), nil
	}
	job, err := w.buildJob(ctx, client.ObjectKey{Namespace: ns, Name: ref.Name})
	if err != nil {
		return nil, err
	}
	if job == nil || job.UID != ref.UID || job.Labels[berthv1alpha1.LabelClass] != string(berthv1alpha1.ClassBuild) ||
		job.Annotations[berthv1alpha1.AnnotationQueuedAt] == "" {
		return field.Forbidden(path, fmt.Sprintf(
			"Job %s is not a build berth admitted, so its Pods cannot be builds; label the Job itself %s=build, not only its pod template, and submit it again",
			ref.Name, berthv1alpha1.LabelClass)), nil
	}
	selector, err := metav1.LabelSelectorAsSelector(job.Spec.Selector)
	if ptr.Deref(job.Spec.Suspend, false) || err != nil || !selector.Matches(labels.Set(meta.Labels)) {
		return field.Forbidden(path, fmt.Sprintf(
			"build Job %s is queued for a build slot, and only its own Pods run once berth releases it; wait for the release, or create no Pods for it by hand",
			ref.Name)), nil
	}
	return nil, nil
}

// buildJob reads a Job from the cache, and from the API server when the
// cache has none or shows it suspended: the Job controller may have seen
// the release first. It returns nil when there is no such Job.
func (w *PodWebhook) buildJob(ctx context.Context, key client.ObjectKey) (*batchv1.Job, error) {
	job := &batchv1.Job{}
	err := w.Resolver.Reader.Get(ctx, key, job)
	if err == nil && !ptr.Deref(job.Spec.Suspend, false) {
		return job, nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("read Job %s: %w", key, err)
	}
	if w.Resolver.APIReader == nil {
		if err != nil {
			return nil, nil
		}
		return job, nil
	}
	err = w.Resolver.APIReader.Get(ctx, key, job)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read Job %s: %w", key, err)
	}
	return job, nil
}

// nameTaken reports whether a Pod of this name, but another UID, exists:
// the API server will refuse the create. It asks the cache, and the API
// server only when the cache has one. berth-manager's cache holds only
// labelled Pods: a name taken by an unlabelled Pod is not seen, and that
// create's charge is released by orgstatus, as for any create refused
// after berth charged it.
func (w *PodWebhook) nameTaken(ctx context.Context, pod *corev1.Pod) (bool, error) {
	key := client.ObjectKey{Namespace: pod.Namespace, Name: pod.Name}
	if key.Namespace == "" {
		key.Namespace = namespaceOf(ctx)
	}
	if key.Name == "" {
		return false, nil
	}
	for _, r := range []client.Reader{w.Resolver.Reader, w.Resolver.APIReader} {
		if r == nil {
			continue
		}
		other := &corev1.Pod{}
		err := r.Get(ctx, key, other)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("read Pod %s: %w", key, err)
		}
		if other.UID == pod.UID {
			return false, nil
		}
	}
	return true, nil
}

// ValidateUpdate guards what a Pod's owner must not change after admission:
// berth's labels, its tolerations, and, through the subresources, Pod
// Security (ephemeral containers) and the org's caps (resize). The API
// server calls it for no other update (see Configurations).
func (w *PodWebhook) ValidateUpdate(ctx context.Context, old, pod *corev1.Pod) (admission.Warnings, error) {
	d := begin(ctx, "Pod", "validate", pod.Name)
	d.class = old.Labels[berthv1alpha1.LabelClass]
	d.org = w.Resolver.OrgName(ctx, d.namespace)
	meta := field.NewPath("metadata")
	if errs := ValidateSystemLabels(old.Labels, pod.Labels, meta.Child("labels")); len(errs) > 0 {
		return nil, d.deny(reasonLabels, apierrors.NewInvalid(podKind, pod.Name, errs))
	}
	if d.skip(w.Resolver.Config, old.Labels) {
		return nil, nil
	}
	t, err := d.target(ctx, w.Resolver, podKind, pod.Name)
	if err != nil {
		return nil, err
	}
	spec := field.NewPath("spec")
	var errs field.ErrorList
	reason := ""
	switch d.subResource {
	case "ephemeralcontainers":
		errs, reason = ValidateSecurity(&pod.ObjectMeta, &pod.Spec, spec), reasonSecurity
		for i := range errs {
			errs[i].Detail += "; with kubectl debug, add --profile=restricted"
		}
	case "resize":
		errs, reason = validateResources(&pod.Spec, *t, spec), reasonResources
	default:
		errs, reason = ValidateTolerations(pod.Spec.Tolerations, *t, spec.Child("tolerations")), reasonPlacement
	}
	if len(errs) > 0 {
		return nil, d.deny(reason, apierrors.NewInvalid(podKind, pod.Name, errs))
	}
	return nil, d.allow()
}

// ValidateSystemLabels denies adding, changing or removing berth's own
// labels (SystemLabels) on an existing object: the class and the org decide
// quotas, queues and placement, and are fixed at admission.
func ValidateSystemLabels(old, labels map[string]string, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, k := range berthv1alpha1.SystemLabels {
		before, had := old[k]
		after, has := labels[k]
		if had == has && before == after {
			continue
		}
		was := fmt.Sprintf("it was %q", before)
		if !had {
			was = "it had none"
		}
		errs = append(errs, field.Forbidden(path.Key(k), fmt.Sprintf(
			"%s is set at admission and cannot be added, changed or removed later (%s); put it back as it was, or delete the object and create it anew with the label",
			k, was)))
	}
	return errs
}

// ValidateDelete allows every deletion.
func (w *PodWebhook) ValidateDelete(context.Context, *corev1.Pod) (admission.Warnings, error) {
	return nil, nil
}

// decision records one admission for metrics and the log.
type decision struct {
	ctx         context.Context
	kind        string
	phase       string
	name        string
	namespace   string
	operation   string
	subResource string
	class       string
	org         string
	dryRun      bool
	start       time.Time
}

func begin(ctx context.Context, kind, phase, name string) *decision {
	d := &decision{ctx: ctx, kind: kind, phase: phase, name: name, start: time.Now()}
	if req, err := admission.RequestFromContext(ctx); err == nil {
		d.namespace = req.Namespace
		d.operation = string(req.Operation)
		d.subResource = req.SubResource
		d.dryRun = req.DryRun != nil && *req.DryRun
		if d.name == "" {
			d.name = req.Name
		}
	}
	return d
}

func namespaceOf(ctx context.Context) string {
	if req, err := admission.RequestFromContext(ctx); err == nil {
		return req.Namespace
	}
	return ""
}

// skip reports whether berth leaves the object alone; it records the class.
func (d *decision) skip(cfg Config, labels map[string]string) bool {
	class, ok := labels[berthv1alpha1.LabelClass]
	d.class = class
	return !ok || cfg.Skipped(d.namespace)
}

// target resolves the object's Target, recording its org, or returns the
// denial.
func (d *decision) target(ctx context.Context, r *Resolver, gk schema.GroupKind, name string) (*Target, error) {
	path := field.NewPath("metadata")
	class, ferr := ValidateClass(d.class, path)
	if ferr != nil {
		return nil, d.deny(reasonClass, invalid(gk, name, ferr))
	}
	t, ferr := r.Target(ctx, d.namespace, class, path)
	if ferr != nil {
		return nil, d.deny(reasonOrg, invalid(gk, name, ferr))
	}
	d.org = t.Org.Name
	return t, nil
}

func (d *decision) done(result string) {
	latency.WithLabelValues(d.kind, d.phase).Observe(time.Since(d.start).Seconds())
	admissions.WithLabelValues(d.kind, d.operation, d.org, result).Inc()
}

func (d *decision) allow() error {
	d.done("allowed")
	ctrl.LoggerFrom(d.ctx).V(1).Info("admitted", "kind", d.kind, "phase", d.phase,
		"object", klog.KRef(d.namespace, d.name), "class", d.class, "org", d.org)
	return nil
}

func (d *decision) deny(reason string, err error) error {
	d.done("denied")
	denials.WithLabelValues(d.kind, reason).Inc()
	ctrl.LoggerFrom(d.ctx).Info("denied", "kind", d.kind, "phase", d.phase,
		"object", klog.KRef(d.namespace, d.name), "class", d.class, "org", d.org, "reason", reason, "message", err.Error())
	return err
}

func (d *decision) fail(err error) error {
	d.done("error")
	ctrl.LoggerFrom(d.ctx).Error(err, "admission failed", "kind", d.kind, "phase", d.phase,
		"object", klog.KRef(d.namespace, d.name), "class", d.class, "org", d.org)
	return apierrors.NewInternalError(err)
}

var podKind = corev1.SchemeGroupVersion.WithKind("Pod").GroupKind()

// invalid is the API error for one field error: 422 Invalid, or 500 for an
// internal failure.
func invalid(gk schema.GroupKind, name string, ferr *field.Error) error {
	if ferr.Type == field.ErrorTypeInternal {
		return apierrors.NewInternalError(ferr)
	}
	return apierrors.NewInvalid(gk, name, field.ErrorList{ferr})
}
