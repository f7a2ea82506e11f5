// Package requests is berth's one accounting of what a Pod asks for. The
// webhooks, the controllers and the scheduler plugin all read a Pod's
// effective requests here, so that a quota, a status and a placement can
// never disagree about the same Pod.
//
// It is built on k8s.io/component-helpers/resource, the scheduler's and the
// kubelet's own accounting: a restartable init container (a sidecar) adds to
// the containers it runs beside, a plain init container counts only while
// it runs alone, and Pod-level resources replace the containers' sum.
package requests

import (
	corev1 "k8s.io/api/core/v1"
	resourcehelper "k8s.io/component-helpers/resource"

	"berth.dev/berth/pkg/placement"
)

// Of returns a Pod spec's effective requests, without the Pod overhead
// (RuntimeClass overhead is the platform's, not the tenant's).
//
// Extended resources such as nvidia.com/gpu must have equal requests and
// limits; the API server defaults a missing request from the limit before
// admission, and Of does the same for a spec that has not been through the
// API server yet.
func Of(spec *corev1.PodSpec) corev1.ResourceList {
	pod := &corev1.Pod{Spec: *spec}
	if limitOnly(spec) {
		pod.Spec = *spec.DeepCopy()
		fill(pod.Spec.InitContainers)
		fill(pod.Spec.Containers)
	}
	return resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{ExcludeOverhead: true})
}

// GPUs is the number of nvidia.com/gpu a Pod holds while it runs.
func GPUs(spec *corev1.PodSpec) int64 {
	q := Of(spec)[placement.GPUResource]
	return q.Value()
}

// Claims reports whether a Pod asks for devices through Dynamic Resource
// Allocation: Pod-level resourceClaims or a container's resources.claims.
// berth cannot count such devices yet, so it admits no Pod that has them.
func Claims(spec *corev1.PodSpec) bool {
	if len(spec.ResourceClaims) > 0 {
		return true
	}
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			if len(cs[i].Resources.Claims) > 0 {
				return true
			}
		}
	}
	return false
}

// limitOnly reports whether a container sets a GPU limit without a request.
func limitOnly(spec *corev1.PodSpec) bool {
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			_, req := cs[i].Resources.Requests[placement.GPUResource]
			_, lim := cs[i].Resources.Limits[placement.GPUResource]
			if lim && !req {
				return true
			}
		}
	}
	return false
}

func fill(cs []corev1.Container) {
	for i := range cs {
		r := &cs[i].Resources
		q, lim := r.Limits[placement.GPUResource]
		if _, req := r.Requests[placement.GPUResource]; lim && !req {
			if r.Requests == nil {
				r.Requests = corev1.ResourceList{}
			}
			r.Requests[placement.GPUResource] = q.DeepCopy()
		}
	}
}
