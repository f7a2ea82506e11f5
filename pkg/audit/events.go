package audit

import (
	"context"
	"fmt"

	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// EventsNamespace is where berth-manager's audited Events are: they regard
// Organizations, which have no namespace of their own.
const EventsNamespace = metav1.NamespaceDefault

// audited are the reasons of the Events that become audit rows.
var audited = map[string]bool{
	berthv1alpha1.AuditQuotaDenied:        true,
	berthv1alpha1.AuditBuildReleased:      true,
	berthv1alpha1.AuditWorkspaceStopped:   true,
	berthv1alpha1.AuditWorkspaceWoken:     true,
	berthv1alpha1.AuditWorkspaceLost:      true,
	berthv1alpha1.AuditWorkspaceRecovered: true,
}

// Events appends berth's own actions to the orgs' audit chains: the Events
// berth-manager reports about an Organization (see
// berthv1alpha1.AuditReporter). Each occurrence of an Event is one row with
// actor Actor and the Event's reason as its action, keyed by the Event's
// UID and the occurrence's number, so a replayed watch event, a relist or a
// restart appends nothing twice.
//
// Events are kept by the API server for an hour (its --event-ttl): an
// action berth-meter does not see within that time is not recorded.
// Anyone who may create Events in EventsNamespace can add rows, as berth:
// keep tenants' write access out of it.
type Events struct {
	Client client.Client
	Log    *Log
}

// EventsCache is the cache setting Events needs: only the Events berth-manager
// reports, in EventsNamespace.
func EventsCache() (client.Object, cache.ByObject) {
	return &eventsv1.Event{}, cache.ByObject{
		Namespaces: map[string]cache.Config{EventsNamespace: {}},
		Field:      fields.OneTermEqualSelector("reportingController", berthv1alpha1.AuditReporter),
	}
}

// Register adds Events to mgr as a controller. mgr's cache must hold
// EventsCache's setting.
func (e *Events) Register(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).Named("auditevents").
		For(&eventsv1.Event{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return isAudited(o.(*eventsv1.Event))
		}))).
		Complete(e)
}

func isAudited(ev *eventsv1.Event) bool {
	return ev.Namespace == EventsNamespace && ev.ReportingController == berthv1alpha1.AuditReporter && audited[ev.Reason] &&
		ev.Regarding.Kind == "Organization" && ev.Regarding.APIVersion == berthv1alpha1.SchemeGroupVersion.String() && ev.Regarding.Name != ""
}

// Reconcile appends the rows of one Event's occurrences that its org's
// chain lacks.
func (e *Events) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var ev eventsv1.Event
	if err := e.Client.Get(ctx, req.NamespacedName, &ev); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !isAudited(&ev) {
		return reconcile.Result{}, nil
	}
	for _, row := range Rows(&ev) {
		if _, err := e.Log.Append(ctx, row); err != nil {
			return reconcile.Result{}, err
		}
	}
	return reconcile.Result{}, nil
}

// Rows returns the audit rows of an Event berth-manager reported: one per
// occurrence, the first at the Event's time, the later ones at the series'
// last observation (the API keeps no time for those between).
func Rows(ev *eventsv1.Event) []Event {
	first := ev.EventTime.Time
	if first.IsZero() {
		first = ev.CreationTimestamp.Time
	}
	n := int32(1)
	if ev.Series != nil && ev.Series.Count > 1 {
		n = ev.Series.Count
	}
	workspace := ""
	if r := ev.Related; r != nil && r.Kind == "Workspace" {
		workspace = r.Name
	}
	rows := make([]Event, 0, n)
	for k := int32(1); k <= n; k++ {
		at := first
		if k > 1 {
			at = ev.Series.LastObservedTime.Time
		}
		rows = append(rows, Event{
			Org: ev.Regarding.Name, At: at, Actor: Actor, Workspace: workspace,
			Action: ev.Reason, Detail: ev.Note, Source: fmt.Sprintf("event/%s/%d", ev.UID, k),
		})
	}
	return rows
}
