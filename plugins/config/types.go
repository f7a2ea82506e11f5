package config

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"berth.dev/berth/pkg/placement"
)

// PlacementArgs are the arguments of the BerthPlacement plugin.
type PlacementArgs struct {
	metav1.TypeMeta `json:",inline"`

	// Preset names the node label and taint keys: aks, eks, gke or
	// karpenter.
	Preset string `json:"preset,omitempty"`
	// Keys, when set, replace the preset's keys.
	Keys *placement.Keys `json:"keys,omitempty"`
	// WorkspaceTargetPercent is the utilization workspaces fill nodes toward,
	// leaving headroom rather than filling to the brim (default 85).
	WorkspaceTargetPercent int32 `json:"workspaceTargetPercent,omitempty"`
	// BuildScratchBytes is the disk one build is expected to use; a node's
	// build capacity, when no label gives it, is its allocatable
	// ephemeral-storage divided by this (default 20Gi).
	BuildScratchBytes int64 `json:"buildScratchBytes,omitempty"`
	// EmptyNodeScore is the score of a node that runs nothing yet, so that
	// builds prefer nodes already up (default 10, out of 100).
	EmptyNodeScore int32 `json:"emptyNodeScore,omitempty"`
}

// Defaults of PlacementArgs.
const (
	DefaultPreset                 = placement.PresetAKS
	DefaultWorkspaceTargetPercent = 85
	DefaultBuildScratchBytes      = 20 << 30
	DefaultEmptyNodeScore         = 10
)

// SetDefaults fills in unset fields.
func SetDefaults(a *PlacementArgs) {
	if a.Preset == "" {
		a.Preset = DefaultPreset
	}
	if a.WorkspaceTargetPercent == 0 {
		a.WorkspaceTargetPercent = DefaultWorkspaceTargetPercent
	}
	if a.BuildScratchBytes == 0 {
		a.BuildScratchBytes = DefaultBuildScratchBytes
	}
	if a.EmptyNodeScore == 0 {
		a.EmptyNodeScore = DefaultEmptyNodeScore
	}
}

// Validate checks defaulted args; each error names the field, the value and
// the fix.
func Validate(a *PlacementArgs) error {
	var errs field.ErrorList
	p := field.NewPath("args")
	if _, err := placement.Preset(a.Preset); err != nil {
		errs = append(errs, field.NotSupported(p.Child("preset"), a.Preset, placement.PresetNames()))
	}
	if a.Keys != nil {
		if err := a.Keys.Validate(); err != nil {
			errs = append(errs, field.Invalid(p.Child("keys"), "", err.Error()))
		}
	}
	if a.WorkspaceTargetPercent < 1 || a.WorkspaceTargetPercent > 100 {
		errs = append(errs, field.Invalid(p.Child("workspaceTargetPercent"), a.WorkspaceTargetPercent, "must be between 1 and 100; 85 leaves headroom"))
	}
	if a.BuildScratchBytes < 0 {
		errs = append(errs, field.Invalid(p.Child("buildScratchBytes"), a.BuildScratchBytes, "must not be negative; use for example 21474836480 (20Gi)"))
	}
	if a.EmptyNodeScore < 0 || a.EmptyNodeScore > 100 {
		errs = append(errs, field.Invalid(p.Child("emptyNodeScore"), a.EmptyNodeScore, "must be between 0 and 100"))
	}
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return fmt.Errorf("BerthPlacement args: %s", strings.Join(msgs, "; "))
}

// ResolvedKeys returns the keys to place by.
func (a *PlacementArgs) ResolvedKeys() (placement.Keys, error) {
	if a.Keys != nil {
		return *a.Keys, nil
	}
	return placement.Preset(a.Preset)
}
