package v1alpha1

// berth-manager records each action of its own that an org's audit log
// keeps as an Event (events.k8s.io/v1) regarding the org's Organization,
// reported by AuditReporter. An Organization is cluster-scoped, so these
// Events live in the default namespace, where tenants are not meant to
// write. berth-meter appends each to the org's audit chain, once.
const AuditReporter = "berth-manager"

// The reasons of berth's audited Events; each is the action of its audit
// row.
const (
	// AuditQuotaDenied: a Pod (or a workspace's start) refused for an org
	// limit.
	AuditQuotaDenied = "QuotaDenied"
	// AuditBuildReleased: a queued build Job released to run.
	AuditBuildReleased = "BuildReleased"
	// AuditWorkspaceStopped: a workspace stopped, for idleness or by its
	// user.
	AuditWorkspaceStopped = "WorkspaceStopped"
	// AuditWorkspaceWoken: a stopped workspace's Pod started again.
	AuditWorkspaceWoken = "WorkspaceWoken"
	// AuditWorkspaceLost: a workspace's Pod lost with its node.
	AuditWorkspaceLost = "WorkspaceLost"
	// AuditWorkspaceRecovered: a lost workspace's Pod started again.
	AuditWorkspaceRecovered = "WorkspaceRecovered"
)
