// Package v1alpha1 holds berth.dev/v1alpha1, the API platform teams use to
// describe a tenant: the Organization.
//
// An Organization is cluster-scoped. A namespace joins it through the trusted
// berth.dev/org label, which only the platform team sets. Everything berth
// decides for a labelled Pod or Job (defaults, caps, quotas, placement, blob
// layout, idle timeout) is read from the Organization of the Pod's namespace.
//
// +kubebuilder:object:generate=true
// +groupName=berth.dev
package v1alpha1
