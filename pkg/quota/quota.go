package quota

import (
	"fmt"
	"time"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// Entry is one admitted Pod's charge.
type Entry struct {
	Class berthv1alpha1.Class
	GPUs  int64
	// Admitted is when the ledger took the Pod, to the second.
	Admitted time.Time
}

// Usage is what an org's charged Pods hold.
type Usage struct {
	Workspaces int64
	GPUs       int64
}

// Add returns u with e added.
func (u Usage) Add(e Entry) Usage {
	if e.Class == berthv1alpha1.ClassWorkspace {
		u.Workspaces++
	}
	u.GPUs += e.GPUs
	return u
}

// UsageOf adds up entries.
func UsageOf[K comparable](entries map[K]Entry) Usage {
	var u Usage
	for _, e := range entries {
		u = u.Add(e)
	}
	return u
}

// Limited reports whether org caps something a Pod of this class and GPUs
// holds: a workspace under spec.maxWorkspaces, or any Pod with GPUs under
// spec.maxGPUs, builds included. Only such Pods are charged in the ledger.
func Limited(org *berthv1alpha1.Organization, class berthv1alpha1.Class, gpus int64) bool {
	return (class == berthv1alpha1.ClassWorkspace && org.Spec.MaxWorkspaces != nil) ||
		(gpus > 0 && org.Spec.MaxGPUs != nil)
}

// ExceededError is a quota denial. Its message names the limit, the usage
// and the fix.
type ExceededError struct {
	Field   string // maxWorkspaces, maxGPUs, or "" for a full ledger
	Org     string
	Limit   int64
	Used    int64
	Request int64
}

func (e *ExceededError) Error() string {
	switch e.Field {
	case "maxGPUs":
		return fmt.Sprintf("Organization %q has %d of its %d GPUs (spec.maxGPUs) in use and this Pod asks for %d more; stop a Pod that holds GPUs, or ask the platform team to raise spec.maxGPUs",
			e.Org, e.Used, e.Limit, e.Request)
	case "maxWorkspaces":
		return fmt.Sprintf("Organization %q already runs %d of its %d workspaces (spec.maxWorkspaces); stop one of them (kubectl delete pod) or ask the platform team to raise spec.maxWorkspaces",
			e.Org, e.Used, e.Limit)
	}
	return fmt.Sprintf("Organization %q has %d Pods charged against its quotas, the most berth keeps for one org; stop some workspaces or GPU Pods, or split the org",
		e.Org, e.Used)
}

// Check decides whether entry fits next to the usage u.
func Check(org *berthv1alpha1.Organization, u Usage, entry Entry) error {
	if entry.Class == berthv1alpha1.ClassWorkspace && org.Spec.MaxWorkspaces != nil && u.Workspaces+1 > int64(*org.Spec.MaxWorkspaces) {
		return &ExceededError{Field: "maxWorkspaces", Org: org.Name, Limit: int64(*org.Spec.MaxWorkspaces), Used: u.Workspaces, Request: 1}
	}
	if entry.GPUs > 0 && org.Spec.MaxGPUs != nil && u.GPUs+entry.GPUs > int64(*org.Spec.MaxGPUs) {
		return &ExceededError{Field: "maxGPUs", Org: org.Name, Limit: int64(*org.Spec.MaxGPUs), Used: u.GPUs, Request: entry.GPUs}
	}
	return nil
}

// check is Check, and a full ledger denies too.
func check(org *berthv1alpha1.Organization, u Usage, n int, entry Entry) error {
	if n >= MaxEntries {
		return &ExceededError{Org: org.Name, Limit: MaxEntries, Used: int64(n)}
	}
	return Check(org, u, entry)
}
