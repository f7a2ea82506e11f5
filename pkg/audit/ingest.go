package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"berth.dev/berth/pkg/httpauth"
)

// IngestPath is where IDE and LLM gateways post audit events.
const IngestPath = "/v1/audit/events"

// MaxEventBytes is the largest event body taken: enough for a long
// instruction and a large patch, which are hashed and dropped.
const MaxEventBytes = 4 << 20

// The RBAC rule a caller needs, checked with a SubjectAccessReview in the
// event's namespace: create auditevents.berth.dev. No such resource is
// served; RBAC rules can name it all the same.
const (
	rbacGroup    = "berth.dev"
	rbacResource = "auditevents"
)

// IngestEvent is the body of one POST: what a gateway saw a user and a model
// do in a workspace. The texts are hashed and dropped.
type IngestEvent struct {
	Namespace   string    `json:"namespace"`
	Workspace   string    `json:"workspace"`
	User        string    `json:"user"`
	Action      string    `json:"action"`
	Model       string    `json:"model,omitempty"`
	TokensIn    int64     `json:"tokensIn,omitempty"`
	TokensOut   int64     `json:"tokensOut,omitempty"`
	Instruction *string   `json:"instruction,omitempty"`
	Response    *string   `json:"response,omitempty"`
	Patch       *string   `json:"patch,omitempty"`
	At          time.Time `json:"at,omitzero"`
}

// Directory answers what the ingest needs of the cluster: a namespace's org
// and whether a workspace exists there.
type Directory interface {
	// OrgOf returns the org of namespace, "" when it belongs to none.
	OrgOf(ctx context.Context, namespace string) (string, error)
	// WorkspaceExists reports whether namespace holds the workspace.
	WorkspaceExists(ctx context.Context, namespace, workspace string) (bool, error)
}

// Ingest serves POST /v1/audit/events. The caller proves who it is with a
// bearer token (a TokenReview) and must be allowed to create auditevents in
// the event's namespace (a SubjectAccessReview). A bad event gets a 4xx that
// names the field and the fix, and nothing is written.
type Ingest struct {
	Log  *Log
	Kube kubernetes.Interface
	Dir  Directory
	// Now stamps events that carry no time.
	Now func() time.Time
}

// ServeHTTP handles one event.
func (in *Ingest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpError(w, http.StatusMethodNotAllowed, "POST an event as JSON to "+IngestPath)
		return
	}
	auth := httpauth.Reviewer{Kube: in.Kube}
	caller, err := auth.Authenticate(r)
	if err != nil {
		httpauth.Fail(w, err, http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxEventBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the event is larger than %d bytes; send one event per request and trim the patch", MaxEventBytes))
			return
		}
		httpError(w, http.StatusBadRequest, "read the body: "+err.Error())
		return
	}
	var ev IngestEvent
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		httpError(w, http.StatusBadRequest, "the body is not an audit event: "+err.Error()+`; send {"namespace", "workspace", "user", "action", ...} as JSON`)
		return
	}
	if err := ev.check(); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := auth.Authorize(r.Context(), caller, authorizationv1.ResourceAttributes{
		Namespace: ev.Namespace, Verb: "create", Group: rbacGroup, Resource: rbacResource,
	}); err != nil {
		httpauth.Fail(w, err, http.StatusForbidden)
		return
	}
	org, err := in.Dir.OrgOf(r.Context(), ev.Namespace)
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, "look up the namespace: "+err.Error())
		return
	}
	if org == "" {
		httpError(w, http.StatusUnprocessableEntity, fmt.Sprintf("namespace %q belongs to no org (it has no berth.dev/org label); send events for workspaces in an org's namespace", ev.Namespace))
		return
	}
	ok, err := in.Dir.WorkspaceExists(r.Context(), ev.Namespace, ev.Workspace)
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, "look up the workspace: "+err.Error())
		return
	}
	if !ok {
		httpError(w, http.StatusNotFound, fmt.Sprintf("workspace %q is not in namespace %q; name a workspace that exists (its berth.dev/workspace label)", ev.Workspace, ev.Namespace))
		return
	}
	at := ev.At
	if at.IsZero() {
		at = in.Now()
	}
	seq, err := in.Log.Append(r.Context(), Event{
		Org: org, At: at, Actor: ev.User, Workspace: ev.Workspace, Action: ev.Action, Model: ev.Model,
		TokensIn: ev.TokensIn, TokensOut: ev.TokensOut, Instruction: ev.Instruction, Response: ev.Response, Patch: ev.Patch,
	})
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, "the audit log is not reachable; retry: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"org": org, "seq": seq})
}

func (ev *IngestEvent) check() error {
	for _, f := range []struct{ name, v, example string }{
		{"namespace", ev.Namespace, "the workspace's namespace"},
		{"workspace", ev.Workspace, "the workspace's berth.dev/workspace label"},
		{"user", ev.User, "the developer, as berth.dev/user names them"},
		{"action", ev.Action, "such as ai.completion or ai.edit"},
	} {
		if strings.TrimSpace(f.v) == "" {
			return fmt.Errorf("field %q is empty; set it to %s", f.name, f.example)
		}
		if len(f.v) > 253 {
			return fmt.Errorf("field %q is %d characters; use 253 or fewer", f.name, len(f.v))
		}
	}
	if errs := validation.IsValidLabelValue(ev.Workspace); len(errs) > 0 {
		return fmt.Errorf("field \"workspace\" %q is not a workspace id: %s", ev.Workspace, strings.Join(errs, "; "))
	}
	if ev.TokensIn < 0 || ev.TokensOut < 0 {
		return fmt.Errorf("tokensIn %d, tokensOut %d: token counts are 0 or more", ev.TokensIn, ev.TokensOut)
	}
	return nil
}

func httpError(w http.ResponseWriter, status int, msg string) {
	httpauth.Fail(w, errors.New(msg), status)
}
