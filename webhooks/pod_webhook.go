package webhooks

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/quota"
)

// PodWebhook mutates and validates labelled Pods, and charges workspace and
// GPU quota.
type PodWebhook struct {
	Resolver *Resolver
	Ledger   *quota.Ledger
	Now      func() time.Time
}

var (
	_ admission.Defaulter[*corev1.Pod] = &PodWebhook{}
	_ admission.Validator[*corev1.Pod] = &PodWebhook{}
)

// Default is the mutating webhook.
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
	// The validating webhook sees only Pods that count against a limit, so
	// the Pod is checked here, as mutated. A later webhook that changes it
	// makes the API server call this one again.
	t.Project = pod.Labels[berthv1alpha1.LabelProject]
	if errs := ValidatePod(&pod.Spec, *t, field.NewPath("spec")); len(errs) > 0 {
		return d.deny(reasonOf(errs[0]), apierrors.NewInvalid(podKind, pod.Name, errs))
	}
	w.admitHeld(d, pod, t)
	return d.allow()
}

// admitHeld admits a charged workspace here, under this replica's quota
// hold, when it has a free slot: the Pod then carries a quota token in place
// of AnnotationQuota, and the API server does not call the validating
// webhook. Near the org's limit there are no holds, and the validating
// webhook decides on the ledger. A later webhook that changes the Pod makes
// the API server call this one again, which takes a second slot: the first
// is released once no Pod carries its token (orgstatus, after Grace).
func (w *PodWebhook) admitHeld(d *decision, pod *corev1.Pod, t *Target) {
	if w.Ledger == nil || d.dryRun || pod.Annotations[berthv1alpha1.AnnotationQuota] != berthv1alpha1.QuotaCharged {
		return
	}
	entry := quota.Entry{Class: t.Class, GPUs: PodGPUs(&pod.Spec), Admitted: w.now()}
	token, ok := w.Ledger.AdmitHeld(t.Org, d.namespace, entry)
	if !ok {
		return
	}
	pod.Labels[berthv1alpha1.LabelQuotaToken] = token
	delete(pod.Annotations, berthv1alpha1.AnnotationQuota)
	heldAdmissions.Inc()
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
	t.Project = pod.Labels[berthv1alpha1.LabelProject]
	if errs := ValidatePod(&pod.Spec, *t, field.NewPath("spec")); len(errs) > 0 {
		return nil, d.deny(reasonOf(errs[0]), apierrors.NewInvalid(podKind, pod.Name, errs))
	}
	gpus := PodGPUs(&pod.Spec)
	// A build's Pods are counted at their Job, by the build queue; Pods the
	// org sets no limit for are admitted without a ledger write.
	if t.Class == berthv1alpha1.ClassBuild || !quota.Limited(t.Org, t.Class, gpus) {
		return nil, d.allow()
	}
	entry := quota.Entry{UID: pod.UID, Class: t.Class, GPUs: gpus, Admitted: w.now()}
	key := quota.Key(d.namespace, pod.Name)
	if d.dryRun {
		err = w.Ledger.Fits(ctx, t.Org, key, entry)
	} else {
		err = w.Ledger.Reserve(ctx, t.Org, key, entry)
	}
	var exceeded *quota.ExceededError
	if errors.As(err, &exceeded) {
		return nil, d.deny("quota", apierrors.NewForbidden(corev1.Resource("pods"), pod.Name, exceeded))
	}
	if err != nil {
		return nil, d.fail(err)
	}
	return nil, d.allow()
}

// ValidateUpdate denies a change of a Pod's quota token: the token ties the
// Pod to its ledger entry. The API server calls it for no other update.
func (w *PodWebhook) ValidateUpdate(ctx context.Context, oldPod, pod *corev1.Pod) (admission.Warnings, error) {
	before, after := oldPod.Labels[berthv1alpha1.LabelQuotaToken], pod.Labels[berthv1alpha1.LabelQuotaToken]
	if before == after {
		return nil, nil
	}
	d := begin(ctx, "Pod", "validate", pod.Name)
	d.class = pod.Labels[berthv1alpha1.LabelClass]
	d.org = pod.Labels[berthv1alpha1.LabelOrg]
	path := field.NewPath("metadata", "labels").Key(berthv1alpha1.LabelQuotaToken)
	return nil, d.deny("quota", apierrors.NewInvalid(podKind, pod.Name, field.ErrorList{
		field.Invalid(path, after, fmt.Sprintf("the quota token is set by berth at admission and cannot change (it was %q); put the label back as it was, or delete the Pod and create a new one", before)),
	}))
}

// ValidateDelete allows every deletion.
func (w *PodWebhook) ValidateDelete(context.Context, *corev1.Pod) (admission.Warnings, error) {
	return nil, nil
}

func (w *PodWebhook) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// decision records one admission for metrics and the log.
type decision struct {
	ctx       context.Context
	kind      string
	phase     string
	name      string
	namespace string
	operation string
	class     string
	org       string
	dryRun    bool
	start     time.Time
}

func begin(ctx context.Context, kind, phase, name string) *decision {
	d := &decision{ctx: ctx, kind: kind, phase: phase, name: name, start: time.Now()}
	if req, err := admission.RequestFromContext(ctx); err == nil {
		d.namespace = req.Namespace
		d.operation = string(req.Operation)
		d.dryRun = req.DryRun != nil && *req.DryRun
		if d.name == "" {
			d.name = req.Name
		}
	}
	return d
}

// skip reports whether berth leaves the object alone; it records the class.
func (d *decision) skip(cfg Config, labels map[string]string) bool {
	class, ok := classOf(labels)
	d.class = class
	return !ok || cfg.Skipped(d.namespace)
}

// target resolves the object's Target, recording its org, or returns the
// denial.
func (d *decision) target(ctx context.Context, r *Resolver, gk schema.GroupKind, name string) (*Target, error) {
	t, ferr := r.Target(ctx, d.namespace, d.class, field.NewPath("metadata"))
	if ferr != nil {
		return nil, d.deny(reasonOf(ferr), invalid(gk, name, ferr))
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

// reasonOf names the rule a field error broke, for the denials metric.
func reasonOf(ferr *field.Error) string {
	switch {
	case strings.Contains(ferr.Field, "labels["):
		return "class"
	case strings.HasSuffix(ferr.Field, ".namespace"):
		return "org"
	case strings.Contains(ferr.Field, ".resources."):
		return "resources"
	case strings.HasSuffix(ferr.Field, ".command"), strings.Contains(ferr.Field, berthv1alpha1.LabelProject):
		return "blob"
	default:
		return "security"
	}
}
