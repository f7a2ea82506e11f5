package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// WorkspacePhase is where a workspace is in its life.
// +kubebuilder:validation:Enum=Starting;Running;Stopping;Stopped;Lost
type WorkspacePhase string

// The phases of a Workspace.
const (
	// WorkspaceStarting: its Pod is created and not yet running.
	WorkspaceStarting WorkspacePhase = "Starting"
	// WorkspaceRunning: its Pod runs.
	WorkspaceRunning WorkspacePhase = "Running"
	// WorkspaceStopping: its Pod is being deleted; its claims stay.
	WorkspaceStopping WorkspacePhase = "Stopping"
	// WorkspaceStopped: it has no Pod and stays so until woken.
	WorkspaceStopped WorkspacePhase = "Stopped"
	// WorkspaceLost: its Pod went with its node; berth is bringing it back.
	WorkspaceLost WorkspacePhase = "Lost"
)

// StopReason says why a workspace stopped or was lost.
// +kubebuilder:validation:Enum=idle;user;spot-loss
type StopReason string

// The reasons a workspace stops.
const (
	// StoppedIdle: berth stopped it after the org's idleTimeout.
	StoppedIdle StopReason = "idle"
	// StoppedUser: a user stopped it, by spec.started or by deleting its Pod.
	StoppedUser StopReason = "user"
	// StoppedSpotLoss: its node went away (a reclaimed spot node, a drain).
	StoppedSpotLoss StopReason = "spot-loss"
)

// AnnotationStopReason on a Workspace says who set spec.started to false:
// idle (berth's idle stop) or user (the default). berth writes it in the
// same update as spec.started, and removes it once the status records the
// stop.
const AnnotationStopReason = "berth.dev/stop-reason"

// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ws,categories=berth
// +kubebuilder:printcolumn:name="User",type=string,JSONPath=`.spec.template.metadata.labels.berth\.dev/user`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Stopped-By",type=string,JSONPath=`.status.stoppedBy`
// +kubebuilder:printcolumn:name="Last-Activity",type=date,JSONPath=`.status.lastActivity`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.status.nodeName`
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.status.podName`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// Workspace is a developer's workspace: the template of its Pod and its
// claims, kept while the Pod is stopped. berth stops it when idle, starts
// it when spec.started is set, and brings it back when its node is lost.
// A labelled workspace Pod created on its own is adopted into one.
type Workspace struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec WorkspaceSpec `json:"spec"`
	// +optional
	Status WorkspaceStatus `json:"status,omitempty"`
}

// WorkspaceSpec is what the developer wants of a workspace.
type WorkspaceSpec struct {
	// Started says whether the workspace should run. berth sets it to false
	// when it stops the workspace for idleness, and when its Pod is deleted
	// by a user; set it to true to wake the workspace.
	Started bool `json:"started"`

	// Template is the workspace's Pod. Every start creates a Pod from it
	// through berth's admission, so quotas, hardening and placement apply
	// as to any Pod. berth sets its berth.dev/class and berth.dev/workspace
	// labels. Its PersistentVolumeClaims outlive every Pod.
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +kubebuilder:pruning:PreserveUnknownFields
	Template corev1.PodTemplateSpec `json:"template"`
}

// WorkspaceStatus is berth's record of a workspace. Only berth writes it.
type WorkspaceStatus struct {
	// Phase is Starting, Running, Stopping, Stopped or Lost.
	// +optional
	Phase WorkspacePhase `json:"phase,omitempty"`
	// StoppedBy says why the workspace last stopped (idle, user or
	// spot-loss); empty while it runs.
	// +optional
	StoppedBy StopReason `json:"stoppedBy,omitempty"`
	// StoppedAt is when it last stopped or was lost.
	// +optional
	StoppedAt *metav1.Time `json:"stoppedAt,omitempty"`
	// StartedAt is when berth last created its Pod.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// LastActivity is the newest of the berth.dev/last-activity heartbeat,
	// the Pod's start and the last wake.
	// +optional
	LastActivity *metav1.Time `json:"lastActivity,omitempty"`
	// PodName and PodUID name the workspace's current Pod.
	// +optional
	PodName string `json:"podName,omitempty"`
	// +optional
	PodUID types.UID `json:"podUID,omitempty"`
	// NodeName is the node its Pod runs on.
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// Claims are the PersistentVolumeClaims the workspace keeps.
	// +optional
	Claims []string `json:"claims,omitempty"`
	// Message says what berth is waiting for, or why a start failed.
	// +optional
	Message string `json:"message,omitempty"`
	// Conditions hold Ready and, after a refused start, StartFailed.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true

// WorkspaceList is a list of Workspaces.
type WorkspaceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Workspace `json:"items"`
}

// WorkspaceAnswer is the reply of berth-manager's workspace API (POST
// /v1/namespaces/{ns}/workspaces/{name}/wake|stop|touch): the workspace's
// state after the action.
// +kubebuilder:object:generate=false
type WorkspaceAnswer struct {
	Namespace string         `json:"namespace"`
	Name      string         `json:"name"`
	Started   bool           `json:"started"`
	Phase     WorkspacePhase `json:"phase,omitempty"`
	PodName   string         `json:"podName,omitempty"`
	NodeName  string         `json:"nodeName,omitempty"`
	Message   string         `json:"message,omitempty"`
}
