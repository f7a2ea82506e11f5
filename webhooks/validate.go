package webhooks

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/placement"
	"berth.dev/berth/pkg/requests"
)

// ceilings are sizes no container asks for in earnest, whatever its org
// allows; a value above one is a typo (2000Gi for 2Gi) and is denied.
var ceilings = map[corev1.ResourceName]resource.Quantity{
	corev1.ResourceCPU:              resource.MustParse("512"),
	corev1.ResourceMemory:           resource.MustParse("4Ti"),
	corev1.ResourceEphemeralStorage: resource.MustParse("64Ti"),
	placement.GPUResource:           resource.MustParse("16"),
}

// The reasons of the denials metric, one per rule group.
const (
	reasonClass     = "class"
	reasonOrg       = "org"
	reasonResources = "resources"
	reasonSecurity  = "security"
	reasonPlacement = "placement"
	reasonBlob      = "blob"
	reasonQuota     = "quota"
	reasonQueue     = "queue"
	reasonLabels    = "labels"
)

// ValidateClass checks the berth.dev/class label value.
func ValidateClass(value string, path *field.Path) (berthv1alpha1.Class, *field.Error) {
	c, ok := berthv1alpha1.ParseClass(value)
	if !ok {
		return "", field.NotSupported(path.Child("labels").Key(berthv1alpha1.LabelClass), value,
			[]string{string(berthv1alpha1.ClassWorkspace), string(berthv1alpha1.ClassBuild), string(berthv1alpha1.ClassInference)})
	}
	return c, nil
}

// ValidatePod checks a mutated Pod (or pod template) against its org's caps,
// Pod Security restricted, berth's placement and the blob data path. Every
// error names the field, the value, the limit and the fix.
func ValidatePod(meta *metav1.ObjectMeta, spec *corev1.PodSpec, t Target, path *field.Path) field.ErrorList {
	errs, _ := validatePod(meta, spec, t, path)
	return errs
}

// validatePod is ValidatePod, and names the rule group of the first error
// for the denials metric.
func validatePod(meta *metav1.ObjectMeta, spec *corev1.PodSpec, t Target, path *field.Path) (field.ErrorList, string) {
	var all field.ErrorList
	reason := ""
	for _, group := range []struct {
		reason string
		errs   field.ErrorList
	}{
		{reasonResources, validateResources(spec, t, path)},
		{reasonSecurity, ValidateSecurity(meta, spec, path)},
		{reasonPlacement, validatePlacement(spec, t, path)},
		{reasonBlob, validateBlob(spec, t, path)},
	} {
		if len(group.errs) > 0 && reason == "" {
			reason = group.reason
		}
		all = append(all, group.errs...)
	}
	return all, reason
}

// capped reports whether a resource is checked against the class maximum,
// and which of the maximum's resources caps it: hugepages count as memory.
func capped(name corev1.ResourceName) (corev1.ResourceName, bool) {
	switch {
	case name == corev1.ResourceCPU, name == corev1.ResourceMemory, name == corev1.ResourceEphemeralStorage, name == placement.GPUResource:
		return name, true
	case strings.HasPrefix(string(name), corev1.ResourceHugePagesPrefix):
		return corev1.ResourceMemory, true
	}
	return "", false
}

func validateResources(spec *corev1.PodSpec, t Target, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	policy := t.Org.Spec.Classes.Policy(t.Class)
	check := func(owner string, r *corev1.ResourceRequirements, p *field.Path) {
		for _, kind := range []string{"requests", "limits"} {
			list := r.Requests
			if kind == "limits" {
				list = r.Limits
			}
			for name, q := range list {
				as, ok := capped(name)
				if !ok {
					continue
				}
				fp := p.Child("resources", kind).Key(string(name))
				if q.Sign() < 0 {
					errs = append(errs, field.Invalid(fp, q.String(), "must not be negative; use a positive quantity such as 500m or 2Gi"))
					continue
				}
				if ceil := ceilings[as]; q.Cmp(ceil) > 0 {
					errs = append(errs, field.Invalid(fp, q.String(),
						fmt.Sprintf("is above %s, more than any container needs; check the unit (for example 2Gi, not 2000Gi)", ceil.String())))
					continue
				}
				if max := amount(policy.Max, as); max != nil && q.Cmp(*max) > 0 {
					errs = append(errs, field.Invalid(fp, q.String(), fmt.Sprintf(
						"%s asks for %s %s, above the %s maximum of %s in Organization %q; ask for at most %s, or ask the platform team to raise spec.classes.%s.max",
						owner, q.String(), name, t.Class, max.String(), t.Org.Name, max.String(), t.Class)))
				}
			}
		}
	}
	if spec.Resources != nil {
		check("the Pod", spec.Resources, path)
	}
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		check(fmt.Sprintf("container %q", c.Name), &c.Resources, path.Child("initContainers").Index(i))
	}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		check(fmt.Sprintf("container %q", c.Name), &c.Resources, path.Child("containers").Index(i))
	}
	if requests.Claims(spec) {
		errs = append(errs, field.Forbidden(path.Child("resourceClaims"),
			"berth cannot count devices asked for through resource claims against the org's quota yet; remove resourceClaims (and resources.claims) and ask for GPUs as resources.limits: {nvidia.com/gpu: N}"))
	}
	if t.Class == berthv1alpha1.ClassInference && requests.GPUs(spec) == 0 {
		errs = append(errs, field.Required(path.Child("containers").Index(0).Child("resources", "limits").Key(string(placement.GPUResource)),
			"inference Pods must request nvidia.com/gpu; add resources.limits: {nvidia.com/gpu: 1} to the vLLM container"))
	}
	return errs
}

// restricted is the upstream Pod Security evaluator.
var restricted = func() policy.Evaluator {
	e, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		panic(fmt.Sprintf("pod security checks: %v", err)) // the upstream checks are static
	}
	return e
}()

// ValidateSecurity runs the upstream Pod Security "restricted" evaluator
// (k8s.io/pod-security-admission, the API server's own) on a Pod: one error
// per check it fails.
func ValidateSecurity(meta *metav1.ObjectMeta, spec *corev1.PodSpec, path *field.Path) field.ErrorList {
	if meta == nil {
		meta = &metav1.ObjectMeta{}
	}
	var errs field.ErrorList
	lv := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	for _, r := range restricted.EvaluatePod(lv, meta, spec) {
		if r.Allowed {
			continue
		}
		what := r.ForbiddenReason
		if r.ForbiddenDetail != "" {
			what += " (" + r.ForbiddenDetail + ")"
		}
		errs = append(errs, field.Forbidden(path, fmt.Sprintf(
			"violates Pod Security \"restricted:latest\": %s; berth admits only Pods that pass it: remove these settings, or leave them unset and berth sets safe ones",
			what)))
	}
	return errs
}

// defaultTolerations are the ones the API server gives every Pod
// (DefaultTolerationSeconds): they only delay eviction from a failing node.
var defaultTolerations = map[string]bool{corev1.TaintNodeNotReady: true, corev1.TaintNodeUnreachable: true}

// validatePlacement keeps placement berth's: no Pod picks its node, skips
// the taints berth's node pools carry, or raises its own priority.
func validatePlacement(spec *corev1.PodSpec, t Target, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if spec.NodeName != "" {
		errs = append(errs, field.Forbidden(path.Child("nodeName"), fmt.Sprintf(
			"a berth Pod cannot name its node (%s): the scheduler places it by its class; remove spec.nodeName", spec.NodeName)))
	}
	errs = append(errs, ValidateTolerations(spec.Tolerations, t, path.Child("tolerations"))...)
	if t.PriorityClass == nil && spec.PriorityClassName != "" && spec.PriorityClassName != t.GlobalDefaultPriorityClass {
		errs = append(errs, field.Forbidden(path.Child("priorityClassName"), fmt.Sprintf(
			"a berth Pod cannot choose its priority (%s); remove spec.priorityClassName, or ask the platform team to install berth's PriorityClasses (%s%s)",
			spec.PriorityClassName, t.Config.PriorityClassPrefix, t.Class)))
	}
	return errs
}

// ValidateTolerations allows only the tolerations berth writes for the
// Pod's class and org, and the API server's defaults: any other could let
// the Pod onto nodes kept for other work (GPU nodes, say).
func ValidateTolerations(tols []corev1.Toleration, t Target, path *field.Path) field.ErrorList {
	own := tolerations(t)
	var errs field.ErrorList
	for i, tol := range tols {
		if defaultTolerations[tol.Key] && tol.Effect == corev1.TaintEffectNoExecute {
			continue
		}
		if containsToleration(own, tol) {
			continue
		}
		errs = append(errs, field.Forbidden(path.Index(i), fmt.Sprintf(
			"toleration {key: %q, operator: %s, effect: %q} is not allowed: berth writes the tolerations a %s Pod needs; remove it",
			tol.Key, tol.Operator, tol.Effect, t.Class)))
	}
	return errs
}

func containsToleration(list []corev1.Toleration, tol corev1.Toleration) bool {
	for _, x := range list {
		if equality.Semantic.DeepEqual(x, tol) {
			return true
		}
	}
	return false
}
