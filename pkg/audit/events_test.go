package audit

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

func orgEvent() *eventsv1.Event {
	return &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Namespace: EventsNamespace, Name: "acme.1", UID: "e-1"},
		EventTime:           metav1.NewMicroTime(time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)),
		ReportingController: berthv1alpha1.AuditReporter,
		Reason:              berthv1alpha1.AuditWorkspaceStopped,
		Note:                "workspace acme-dev/ws-ana stopped for idleness",
		Regarding:           corev1.ObjectReference{APIVersion: "berth.dev/v1alpha1", Kind: "Organization", Name: "acme"},
		Related:             &corev1.ObjectReference{APIVersion: "berth.dev/v1alpha1", Kind: "Workspace", Namespace: "acme-dev", Name: "ws-ana"},
	}
}

func TestOnlyBerthsOrganizationEventsAreAudited(t *testing.T) {
	assert.True(t, isAudited(orgEvent()))
	for name, change := range map[string]func(*eventsv1.Event){
		"another reporter":     func(e *eventsv1.Event) { e.ReportingController = "kubelet" },
		"another reason":       func(e *eventsv1.Event) { e.Reason = "Adopted" },
		"a tenant's namespace": func(e *eventsv1.Event) { e.Namespace = "acme-dev" },
		"about a Pod":          func(e *eventsv1.Event) { e.Regarding.Kind = "Pod" },
		"another group":        func(e *eventsv1.Event) { e.Regarding.APIVersion = "example.com/v1" },
		"no org named":         func(e *eventsv1.Event) { e.Regarding.Name = "" },
	} {
		ev := orgEvent()
		change(ev)
		assert.False(t, isAudited(ev), name)
	}
}

func TestAnEventsOccurrencesAreRowsKeyedByUIDAndNumber(t *testing.T) {
	ev := orgEvent()
	rows := Rows(ev)
	assert.Equal(t, []Event{{
		Org: "acme", At: ev.EventTime.Time, Actor: Actor, Workspace: "ws-ana",
		Action: berthv1alpha1.AuditWorkspaceStopped, Detail: ev.Note, Source: "event/e-1/1",
	}}, rows)

	last := time.Date(2026, 12, 6, 9, 5, 0, 0, time.UTC)
	ev.Series = &eventsv1.EventSeries{Count: 3, LastObservedTime: metav1.NewMicroTime(last)}
	ev.Related = &corev1.ObjectReference{Kind: "Job", Name: "build"}
	rows = Rows(ev)
	if assert.Len(t, rows, 3) {
		assert.Equal(t, []string{"event/e-1/1", "event/e-1/2", "event/e-1/3"}, []string{rows[0].Source, rows[1].Source, rows[2].Source})
		assert.Equal(t, ev.EventTime.Time, rows[0].At)
		assert.Equal(t, last, rows[2].At)
		assert.Empty(t, rows[0].Workspace, "only a Workspace names one")
	}
}
