package controllers

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// Auditor records berth's own actions for an org's audit log: each is an
// Event regarding the org's Organization, reported by
// berthv1alpha1.AuditReporter, whose related object is the one acted on.
// berth-meter appends them to the org's audit chain. A nil Auditor records
// nothing.
type Auditor struct {
	Recorder events.EventRecorder
}

// Record records one action, one of the berthv1alpha1.Audit* reasons.
// note is berth's own words: it must hold nothing a user wrote but the
// names of objects.
func (a *Auditor) Record(org *berthv1alpha1.Organization, related runtime.Object, eventType, reason, action, note string, args ...any) {
	if a == nil || a.Recorder == nil || org == nil {
		return
	}
	a.Recorder.Eventf(org, related, eventType, reason, action, note, args...)
}
