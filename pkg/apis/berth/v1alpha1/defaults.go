package v1alpha1

import (
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// The API server fills in defaults from the CRD's schema; these helpers give
// the same answers for objects that never went through it (fakes, older
// stored versions), so callers never check for nil.

// IdleTimeoutOrDefault is the org's idle timeout, 30m when unset; 0 means
// workspaces are never stopped for idleness.
func (s *OrganizationSpec) IdleTimeoutOrDefault() time.Duration {
	if s.IdleTimeout != nil {
		return max(s.IdleTimeout.Duration, 0)
	}
	d, _ := time.ParseDuration(DefaultIdleTimeout)
	return d
}

// SpotPolicyOrDefault is the org's spot policy, PreferSpot when unset.
func (s *OrganizationSpec) SpotPolicyOrDefault() SpotPolicy {
	if s.SpotPolicy == "" {
		return DefaultSpotPolicy
	}
	return s.SpotPolicy
}

// ScratchRequest is a build's ephemeral-storage request, 10Gi when unset.
func (s *OrganizationSpec) ScratchRequest() resource.Quantity {
	if s.BuildScratch != nil && s.BuildScratch.Request != nil {
		return *s.BuildScratch.Request
	}
	return resource.MustParse(DefaultScratchRequest)
}

// ScratchLimit is a build's scratch sizeLimit and ephemeral-storage limit,
// 20Gi when unset.
func (s *OrganizationSpec) ScratchLimit() resource.Quantity {
	if s.BuildScratch != nil && s.BuildScratch.Limit != nil {
		return *s.BuildScratch.Limit
	}
	return resource.MustParse(DefaultScratchLimit)
}

// Policy returns the class's resource policy.
func (c *ClassPolicies) Policy(class Class) ClassPolicy {
	switch class {
	case ClassWorkspace:
		return c.Workspace
	case ClassBuild:
		return c.Build
	case ClassInference:
		return c.Inference
	}
	return ClassPolicy{}
}
