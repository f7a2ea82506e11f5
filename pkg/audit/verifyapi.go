package audit

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/kubernetes"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/httpauth"
)

// VerifyPath is where an org's audit chain is checked, and VerifyPattern
// its route: GET only, the mux answers other methods.
const (
	VerifyPath    = "/v1/audit/verify"
	VerifyPattern = "GET " + VerifyPath
)

// VerifyAPI serves GET /v1/audit/verify?org=ORG: it recomputes the org's
// chain, as berth-meter audit verify does, and answers with a
// berthv1alpha1.AuditReport (200, whether the chain holds or not). The
// caller must be allowed to get auditlogs.berth.dev named after the org
// (cluster-wide), checked with a SubjectAccessReview.
type VerifyAPI struct {
	Log  *Log
	Kube kubernetes.Interface
}

// ServeHTTP checks one org's chain.
func (a *VerifyAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	auth := httpauth.Reviewer{Kube: a.Kube}
	caller, err := auth.Authenticate(r)
	if err != nil {
		httpauth.Fail(w, err, http.StatusUnauthorized)
		return
	}
	org := r.URL.Query().Get("org")
	if org == "" {
		httpauth.Fail(w, errors.New(`parameter "org" is empty; name the Organization, such as org=acme`), http.StatusBadRequest)
		return
	}
	if err := auth.Authorize(r.Context(), caller, authorizationv1.ResourceAttributes{
		Verb: "get", Group: rbacGroup, Resource: "auditlogs", Name: org,
	}); err != nil {
		httpauth.Fail(w, err, http.StatusForbidden)
		return
	}
	rep, err := a.Log.Verify(r.Context(), org)
	if err != nil {
		httpauth.Fail(w, fmt.Errorf("read the audit log of org %s: %w", org, err), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(rep.API())
}

// API is the report as the audit API gives it.
func (rep *Report) API() berthv1alpha1.AuditReport {
	out := berthv1alpha1.AuditReport{Org: rep.Org, Rows: rep.Rows, HeadSeq: rep.HeadSeq, HeadHash: hex.EncodeToString(rep.HeadHash)}
	if b := rep.Broken; b != nil {
		out.Broken = &berthv1alpha1.AuditBreak{Seq: b.Seq, Why: b.Why}
	}
	return out
}
