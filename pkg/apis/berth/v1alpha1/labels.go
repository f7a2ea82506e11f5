package v1alpha1

// The label and annotation contract between berth and its users. See docs/design.md,
// "The contract with users".
const (
	// LabelOrg on a Namespace names the Organization that owns it. It is
	// trusted: set by the platform team and never read from a Pod.
	LabelOrg = "berth.dev/org"
	// LabelClass on a Pod or Job opts it into berth. Objects without it are
	// never touched.
	LabelClass = "berth.dev/class"
	// LabelUser names the developer who owns a Pod or Job.
	LabelUser = "berth.dev/user"
	// LabelWorkspace is the workspace id of a workspace Pod.
	LabelWorkspace = "berth.dev/workspace"
	// LabelProject is the build project id; blob paths are derived from it.
	LabelProject = "berth.dev/project"
	// LabelPool on a Node names its pool, as the pools' prices name it
	// (metering's cost, kubectl berth ls).
	LabelPool = "berth.dev/pool"
	// AnnotationLastActivity is the RFC 3339 heartbeat of a workspace.
	AnnotationLastActivity = "berth.dev/last-activity"
	// AnnotationQuota is set by the mutating webhook to QuotaCharged on a
	// Pod that counts against a limit of its org, and removed from every
	// other: only such Pods' creates are sent to the validating webhook,
	// which writes the quota ledger.
	AnnotationQuota = "berth.dev/quota"
	// QuotaCharged is AnnotationQuota's value.
	QuotaCharged = "charged"
	// AnnotationQueuedAt marks a build Job berth queued, with the time it
	// was admitted (RFC 3339); queued builds are released oldest first. Only
	// berth sets or changes it.
	AnnotationQueuedAt = "berth.dev/queued-at"

	// FinalizerMetering keeps a labelled Pod until berth-meter has
	// written its last usage interval. berth-meter adds it when it first
	// sees a Pod, and berth-manager at admission when it runs with
	// --metering-finalizer; berth-meter removes it.
	FinalizerMetering = "berth.dev/metering"
)

// Class is the kind of developer workload a Pod or Job is.
type Class string

// The classes of the berth.dev/class label.
const (
	ClassWorkspace Class = "workspace"
	ClassBuild     Class = "build"
	ClassInference Class = "inference"
)

// Classes lists every valid class, in the order they are documented.
var Classes = []Class{ClassWorkspace, ClassBuild, ClassInference}

// ParseClass returns the class a label value names, and false when the value is
// not a class.
func ParseClass(s string) (Class, bool) {
	for _, c := range Classes {
		if string(c) == s {
			return c, true
		}
	}
	return "", false
}

// SystemLabels are the labels berth decides: once a Pod or Job is created,
// no user may add, change or remove them.
var SystemLabels = []string{LabelClass, LabelOrg}
