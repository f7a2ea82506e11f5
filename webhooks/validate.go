package webhooks

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/placement"
)

// ceilings are sizes no container asks for in earnest, whatever its org
// allows; a value above one is a typo (2000Gi for 2Gi) and is denied.
var ceilings = map[corev1.ResourceName]resource.Quantity{
	corev1.ResourceCPU:              resource.MustParse("512"),
	corev1.ResourceMemory:           resource.MustParse("4Ti"),
	corev1.ResourceEphemeralStorage: resource.MustParse("64Ti"),
	placement.GPUResource:           resource.MustParse("16"),
}

// capped are the resources checked against the class maximum.
var capped = []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage, placement.GPUResource}

// allowedCapabilities are the only capabilities Pod Security "restricted"
// lets a container add.
var allowedCapabilities = map[corev1.Capability]bool{"NET_BIND_SERVICE": true}

// ValidateClass checks the berth.dev/class label value.
func ValidateClass(value string, path *field.Path) (berthv1alpha1.Class, *field.Error) {
	c, ok := berthv1alpha1.ParseClass(value)
	if !ok {
		return "", field.NotSupported(path.Child("labels").Key(berthv1alpha1.LabelClass), value,
			[]string{string(berthv1alpha1.ClassWorkspace), string(berthv1alpha1.ClassBuild), string(berthv1alpha1.ClassInference)})
	}
	return c, nil
}

// ValidatePod checks a mutated Pod spec against its org's caps and the
// security rules. Every error names the field, the value, the limit and the
// fix.
func ValidatePod(spec *corev1.PodSpec, t Target, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, validateResources(spec, t, path)...)
	errs = append(errs, validateSecurity(spec, path)...)
	errs = append(errs, validateBlob(spec, t, path)...)
	return errs
}

func validateResources(spec *corev1.PodSpec, t Target, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	policy := t.Org.Spec.Classes.Policy(t.Class)
	check := func(c corev1.Container, p *field.Path) {
		for kind, list := range map[string]corev1.ResourceList{"requests": c.Resources.Requests, "limits": c.Resources.Limits} {
			for _, name := range capped {
				q, ok := list[name]
				if !ok {
					continue
				}
				fp := p.Child("resources", kind).Key(string(name))
				if q.Sign() < 0 {
					errs = append(errs, field.Invalid(fp, q.String(), "must not be negative; use a positive quantity such as 500m or 2Gi"))
					continue
				}
				if ceil := ceilings[name]; q.Cmp(ceil) > 0 {
					errs = append(errs, field.Invalid(fp, q.String(),
						fmt.Sprintf("is above %s, more than any container needs; check the unit (for example 2Gi, not 2000Gi)", ceil.String())))
					continue
				}
				if max := amount(policy.Max, name); max != nil && q.Cmp(*max) > 0 {
					errs = append(errs, field.Invalid(fp, q.String(), fmt.Sprintf(
						"container %q asks for %s %s, above the %s maximum of %s in Organization %q; ask for at most %s, or ask the platform team to raise spec.classes.%s.max",
						c.Name, q.String(), name, t.Class, max.String(), t.Org.Name, max.String(), t.Class)))
				}
			}
		}
	}
	for i, c := range spec.InitContainers {
		check(c, path.Child("initContainers").Index(i))
	}
	for i, c := range spec.Containers {
		check(c, path.Child("containers").Index(i))
	}
	if t.Class == berthv1alpha1.ClassInference && podGPUs(spec) == 0 {
		errs = append(errs, field.Required(path.Child("containers").Index(0).Child("resources", "limits").Key(string(placement.GPUResource)),
			"inference Pods must request nvidia.com/gpu; add resources.limits: {nvidia.com/gpu: 1} to the vLLM container"))
	}
	return errs
}

func validateSecurity(spec *corev1.PodSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	forbid := func(p *field.Path, what string) {
		errs = append(errs, field.Forbidden(p, what))
	}
	if spec.HostNetwork {
		forbid(path.Child("hostNetwork"), "host networking is not allowed; remove hostNetwork")
	}
	if spec.HostPID {
		forbid(path.Child("hostPID"), "sharing the host's process namespace is not allowed; remove hostPID")
	}
	if spec.HostIPC {
		forbid(path.Child("hostIPC"), "sharing the host's IPC namespace is not allowed; remove hostIPC")
	}
	for i, v := range spec.Volumes {
		if v.HostPath != nil {
			forbid(path.Child("volumes").Index(i).Child("hostPath"),
				fmt.Sprintf("hostPath volume %q (%s) is not allowed; use an emptyDir or a PersistentVolumeClaim", v.Name, v.HostPath.Path))
		}
	}
	if psc := spec.SecurityContext; psc != nil {
		if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
			errs = append(errs, field.Invalid(path.Child("securityContext", "runAsUser"), 0, "running as root is not allowed; remove runAsUser or use a non-zero user id such as 1000"))
		}
		if psc.RunAsNonRoot != nil && !*psc.RunAsNonRoot {
			errs = append(errs, field.Invalid(path.Child("securityContext", "runAsNonRoot"), false, "containers must run as non-root; remove runAsNonRoot: false"))
		}
	}
	for _, group := range []struct {
		name string
		cs   []corev1.Container
	}{{"initContainers", spec.InitContainers}, {"containers", spec.Containers}} {
		for i, c := range group.cs {
			errs = append(errs, validateContainerSecurity(c, path.Child(group.name).Index(i))...)
		}
	}
	return errs
}

func validateContainerSecurity(c corev1.Container, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for j, port := range c.Ports {
		if port.HostPort != 0 {
			errs = append(errs, field.Forbidden(p.Child("ports").Index(j).Child("hostPort"),
				fmt.Sprintf("host port %d is not allowed; remove hostPort and use a Service", port.HostPort)))
		}
	}
	sc := c.SecurityContext
	if sc == nil {
		return errs
	}
	sp := p.Child("securityContext")
	if sc.Privileged != nil && *sc.Privileged {
		errs = append(errs, field.Forbidden(sp.Child("privileged"), fmt.Sprintf("container %q may not be privileged; remove privileged: true", c.Name)))
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		errs = append(errs, field.Invalid(sp.Child("runAsUser"), 0, fmt.Sprintf("container %q may not run as root; remove runAsUser or use a non-zero user id such as 1000", c.Name)))
	}
	if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
		errs = append(errs, field.Invalid(sp.Child("runAsNonRoot"), false, fmt.Sprintf("container %q must run as non-root; remove runAsNonRoot: false", c.Name)))
	}
	if sc.AllowPrivilegeEscalation != nil && *sc.AllowPrivilegeEscalation {
		errs = append(errs, field.Invalid(sp.Child("allowPrivilegeEscalation"), true, fmt.Sprintf("container %q may not allow privilege escalation; remove allowPrivilegeEscalation: true", c.Name)))
	}
	if sc.Capabilities != nil {
		for j, cp := range sc.Capabilities.Add {
			if !allowedCapabilities[cp] {
				errs = append(errs, field.Forbidden(sp.Child("capabilities", "add").Index(j),
					fmt.Sprintf("capability %s is not allowed; only NET_BIND_SERVICE may be added", cp)))
			}
		}
	}
	return errs
}
