package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SpotPolicy says whether an org's workspaces and builds run on spot nodes.
// +kubebuilder:validation:Enum=SpotOnly;PreferSpot;OnDemand
type SpotPolicy string

const (
	// SpotOnly requires spot nodes: a workload waits rather than run on demand.
	SpotOnly SpotPolicy = "SpotOnly"
	// PreferSpot places on spot nodes and falls back to on-demand nodes.
	PreferSpot SpotPolicy = "PreferSpot"
	// OnDemand never uses spot nodes.
	OnDemand SpotPolicy = "OnDemand"
)

// Default values of an Organization's optional fields.
const (
	DefaultIdleTimeout        = "30m"
	DefaultSpotPolicy         = PreferSpot
	DefaultUploadsContainer   = "uploads"
	DefaultProjectsContainer  = "projects"
	DefaultArtifactsContainer = "artifacts"
	DefaultCredentialsKey     = "connectionString"
	DefaultScratchRequest     = "10Gi"
	DefaultScratchLimit       = "20Gi"
)

// +genclient
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=org;orgs,categories=berth
// +kubebuilder:printcolumn:name="Spot",type=string,JSONPath=`.spec.spotPolicy`
// +kubebuilder:printcolumn:name="Workspaces",type=integer,JSONPath=`.status.workspaces`
// +kubebuilder:printcolumn:name="Max-Workspaces",type=integer,JSONPath=`.spec.maxWorkspaces`
// +kubebuilder:printcolumn:name="Builds",type=integer,JSONPath=`.status.runningBuilds`
// +kubebuilder:printcolumn:name="Queued",type=integer,JSONPath=`.status.queuedBuilds`
// +kubebuilder:printcolumn:name="GPUs",type=integer,JSONPath=`.status.gpus`
// +kubebuilder:printcolumn:name="Idle-Timeout",type=string,JSONPath=`.spec.idleTimeout`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// Organization is a tenant of the cluster: its quotas, per-class resource
// defaults and caps, idle timeout, spot policy and blob settings. Namespaces
// join an Organization through the berth.dev/org label.
type Organization struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec OrganizationSpec `json:"spec,omitempty"`
	// +optional
	Status OrganizationStatus `json:"status,omitempty"`
}

// OrganizationSpec is what the platform team sets for a tenant. Every field is
// optional; an empty spec means no caps, no quotas and berth's defaults.
type OrganizationSpec struct {
	// Classes holds the resource defaults and caps of each workload class.
	// +optional
	Classes ClassPolicies `json:"classes,omitempty"`

	// MaxWorkspaces caps the org's workspace Pods. Unset means no cap.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxWorkspaces *int32 `json:"maxWorkspaces,omitempty"`

	// MaxConcurrentBuilds caps the org's running builds. Builds over the cap
	// are queued as suspended Jobs and released in order, never rejected.
	// Unset means no cap.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxConcurrentBuilds *int32 `json:"maxConcurrentBuilds,omitempty"`

	// MaxGPUs caps the nvidia.com/gpu the org's Pods request in total. Unset
	// means no cap.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxGPUs *int32 `json:"maxGPUs,omitempty"`

	// IdleTimeout is how long a workspace may go without activity before it is
	// stopped (its claims and template are kept). A Go duration such as 30m
	// or 2h; 0 never stops a workspace.
	// +kubebuilder:default="30m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) == duration('0s') || duration(self) >= duration('1m')",message="idleTimeout must be 0 (never stop) or at least 1m; use a value such as 30m"
	// +optional
	IdleTimeout *metav1.Duration `json:"idleTimeout,omitempty"`

	// SpotPolicy says whether workspaces and builds run on spot nodes:
	// SpotOnly, PreferSpot (the default) or OnDemand. Inference runs on GPU
	// nodes whatever the policy.
	// +kubebuilder:default=PreferSpot
	// +optional
	SpotPolicy SpotPolicy `json:"spotPolicy,omitempty"`

	// BuildScratch sizes the /workspace scratch volume of builds, on the
	// node's local SSD.
	// +optional
	BuildScratch *ScratchPolicy `json:"buildScratch,omitempty"`

	// BuildCacheClaimName names a PersistentVolumeClaim, in the build's
	// namespace, mounted at /cache for Maven and Gradle caches. Unset means
	// builds get no cache volume.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	// +optional
	BuildCacheClaimName string `json:"buildCacheClaimName,omitempty"`

	// Blob holds where builds fetch sources and deliver results.
	// +optional
	Blob *BlobSettings `json:"blob,omitempty"`
}

// ClassPolicies holds one ClassPolicy per workload class.
type ClassPolicies struct {
	// +optional
	Workspace ClassPolicy `json:"workspace,omitempty"`
	// +optional
	Build ClassPolicy `json:"build,omitempty"`
	// +optional
	Inference ClassPolicy `json:"inference,omitempty"`
}

// ClassPolicy holds a class's per-container resource defaults and caps.
// +kubebuilder:validation:XValidation:rule="!has(self.default) || !has(self.max) || !has(self.default.cpu) || !has(self.max.cpu) || quantity(string(self.default.cpu)).compareTo(quantity(string(self.max.cpu))) <= 0",message="default.cpu must not be above max.cpu; lower the default or raise the max"
// +kubebuilder:validation:XValidation:rule="!has(self.default) || !has(self.max) || !has(self.default.memory) || !has(self.max.memory) || quantity(string(self.default.memory)).compareTo(quantity(string(self.max.memory))) <= 0",message="default.memory must not be above max.memory; lower the default or raise the max"
// +kubebuilder:validation:XValidation:rule="!has(self.default) || !has(self.max) || !has(self.default.ephemeralStorage) || !has(self.max.ephemeralStorage) || quantity(string(self.default.ephemeralStorage)).compareTo(quantity(string(self.max.ephemeralStorage))) <= 0",message="default.ephemeralStorage must not be above max.ephemeralStorage; lower the default or raise the max"
// +kubebuilder:validation:XValidation:rule="!has(self.default) || !has(self.max) || !has(self.default.gpus) || !has(self.max.gpus) || self.default.gpus <= self.max.gpus",message="default.gpus must not be above max.gpus; lower the default or raise the max"
type ClassPolicy struct {
	// Default is given to containers that set no request or limit for a
	// resource.
	// +optional
	Default *Resources `json:"default,omitempty"`
	// Max caps each container's requests and limits. A Pod above it is
	// denied with the container, resource, value and cap named.
	// +optional
	Max *Resources `json:"max,omitempty"`
}

// Resources is an amount of each resource berth manages. Quantities use the
// Kubernetes notation (500m, 2, 4Gi) and must not be negative.
// +kubebuilder:validation:XValidation:rule="!has(self.cpu) || quantity(string(self.cpu)).compareTo(quantity('0')) >= 0",message="cpu must not be negative; use a value such as 500m or 2"
// +kubebuilder:validation:XValidation:rule="!has(self.memory) || quantity(string(self.memory)).compareTo(quantity('0')) >= 0",message="memory must not be negative; use a value such as 4Gi"
// +kubebuilder:validation:XValidation:rule="!has(self.ephemeralStorage) || quantity(string(self.ephemeralStorage)).compareTo(quantity('0')) >= 0",message="ephemeralStorage must not be negative; use a value such as 20Gi"
type Resources struct {
	// +optional
	CPU *resource.Quantity `json:"cpu,omitempty"`
	// +optional
	Memory *resource.Quantity `json:"memory,omitempty"`
	// +optional
	EphemeralStorage *resource.Quantity `json:"ephemeralStorage,omitempty"`
	// GPUs is a count of nvidia.com/gpu.
	// +kubebuilder:validation:Minimum=0
	// +optional
	GPUs *int32 `json:"gpus,omitempty"`
}

// ScratchPolicy sizes a build's scratch volume and ephemeral storage.
// +kubebuilder:validation:XValidation:rule="!has(self.request) || !has(self.limit) || quantity(string(self.request)).compareTo(quantity(string(self.limit))) <= 0",message="buildScratch.request must not be above buildScratch.limit; lower the request or raise the limit"
// +kubebuilder:validation:XValidation:rule="!has(self.request) || quantity(string(self.request)).compareTo(quantity('0')) > 0",message="buildScratch.request must be positive; use a value such as 10Gi"
// +kubebuilder:validation:XValidation:rule="!has(self.limit) || quantity(string(self.limit)).compareTo(quantity('0')) > 0",message="buildScratch.limit must be positive; use a value such as 20Gi"
type ScratchPolicy struct {
	// Request is the ephemeral-storage request of the build (default 10Gi).
	// +optional
	Request *resource.Quantity `json:"request,omitempty"`
	// Limit is the emptyDir sizeLimit and the ephemeral-storage limit of the
	// build (default 20Gi).
	// +optional
	Limit *resource.Quantity `json:"limit,omitempty"`
}

// BlobSettings says where builds fetch sources and deliver results in Azure
// Blob Storage. Sources are read from {uploadsContainer}/{project}/source.zip,
// results written to {projectsContainer}/{project}/build/result.zip and logs
// to {projectsContainer}/{project}/logs/build.log.
type BlobSettings struct {
	// AccountURL is the storage account's blob endpoint, such as
	// https://myaccount.blob.core.windows.net.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'https' || url(self).getScheme() == 'http')",message="accountURL must be an http(s) URL such as https://myaccount.blob.core.windows.net"
	AccountURL string `json:"accountURL"`
	// UploadsContainer holds the sources builds fetch (default uploads).
	// +kubebuilder:default=uploads
	// +kubebuilder:validation:Pattern=`^[a-z0-9](-?[a-z0-9]){2,62}$`
	// +optional
	UploadsContainer string `json:"uploadsContainer,omitempty"`
	// ProjectsContainer receives build results and logs (default projects).
	// +kubebuilder:default=projects
	// +kubebuilder:validation:Pattern=`^[a-z0-9](-?[a-z0-9]){2,62}$`
	// +optional
	ProjectsContainer string `json:"projectsContainer,omitempty"`
	// ArtifactsContainer receives versioned artifacts (default artifacts).
	// +kubebuilder:default=artifacts
	// +kubebuilder:validation:Pattern=`^[a-z0-9](-?[a-z0-9]){2,62}$`
	// +optional
	ArtifactsContainer string `json:"artifactsContainer,omitempty"`
	// CredentialsSecret names a Secret, in berth's own namespace, holding a
	// storage connection string (development, Azurite): berth-manager signs
	// the builds' URLs with it, and no build Pod sees it. Unset means
	// berth-manager's workload identity (DefaultAzureCredential), as in
	// production. Only when berth-manager runs with
	// --blob-credentials-in-pods (local development) is the Secret of this
	// name in the build's own namespace passed to its Pod instead.
	// +optional
	CredentialsSecret *SecretKeyRef `json:"credentialsSecret,omitempty"`
	// Projects, when set, are the only projects the org's builds may use,
	// each from the namespaces it names. Unset, a build may use any
	// project from any namespace of the org, unless another Organization
	// shares this account and one of these containers: then each org must
	// list its projects, and a project listed by both is refused to both.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=1000
	// +optional
	Projects []BlobProject `json:"projects,omitempty"`
}

// BlobProject is one project an org's builds may use.
type BlobProject struct {
	// Name is the project id: the berth.dev/project label of its builds.
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`
	Name string `json:"name"`
	// Namespaces are the org's namespaces whose builds may use the
	// project; unset means any namespace of the org.
	// +listType=set
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`
}

// SecretKeyRef names one key of a Secret in the workload's namespace.
type SecretKeyRef struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Key defaults to connectionString.
	// +kubebuilder:default=connectionString
	// +optional
	Key string `json:"key,omitempty"`
}

// OrganizationStatus holds the org's live counts, kept by berth-manager.
type OrganizationStatus struct {
	// ObservedGeneration is the spec generation the counts were taken under.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Workspaces counts the org's workspace Pods that are not finished.
	// +optional
	Workspaces int32 `json:"workspaces"`
	// RunningBuilds counts the org's build Jobs that are not suspended and
	// not finished.
	// +optional
	RunningBuilds int32 `json:"runningBuilds"`
	// QueuedBuilds counts the org's build Jobs waiting, suspended, for a slot.
	// +optional
	QueuedBuilds int32 `json:"queuedBuilds"`
	// GPUs sums the nvidia.com/gpu requested by the org's unfinished Pods.
	// +optional
	GPUs int32 `json:"gpus"`
	// Conditions describe the org's state, such as QuotaExceeded.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true

// OrganizationList is a list of Organizations.
type OrganizationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Organization `json:"items"`
}

// WithDefaults returns the settings with the containers' defaults filled
// in.
func (in *BlobSettings) WithDefaults() BlobSettings {
	bs := *in
	if bs.UploadsContainer == "" {
		bs.UploadsContainer = DefaultUploadsContainer
	}
	if bs.ProjectsContainer == "" {
		bs.ProjectsContainer = DefaultProjectsContainer
	}
	if bs.ArtifactsContainer == "" {
		bs.ArtifactsContainer = DefaultArtifactsContainer
	}
	return bs
}
