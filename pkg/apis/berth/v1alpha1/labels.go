package v1alpha1

// The label and annotation contract between berth and its users. See DESIGN.md,
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
	// AnnotationLastActivity is the RFC 3339 heartbeat of a workspace.
	AnnotationLastActivity = "berth.dev/last-activity"
	// AnnotationQuota is set by the webhook to QuotaCharged on a Pod that
	// counts against a limit of its org: only such Pods are sent to the
	// validating webhook, which writes the quota ledger.
	AnnotationQuota = "berth.dev/quota"
	// QuotaCharged is AnnotationQuota's value.
	QuotaCharged = "charged"
	// LabelQuotaToken is set by the mutating webhook on a workspace it
	// admitted under its replica's quota hold, in place of AnnotationQuota:
	// the ledger entry is keyed by this token, since a Pod created with
	// generateName has no name yet. Whatever a user writes there on create
	// is replaced, and changing it later is denied.
	LabelQuotaToken = "berth.dev/quota-token"
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
