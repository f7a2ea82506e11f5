package blobgrants

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	authorizationv1 "k8s.io/api/authorization/v1"

	"berth.dev/berth/pkg/blob"
	"berth.dev/berth/pkg/httpauth"
)

// ProjectPattern is the developers' side: a URL to put a project's
// sources, or to read the log or result of its last build.
const ProjectPattern = "POST /v1/namespaces/{namespace}/projects/{project}/{blob}"

// ProjectAPI serves ProjectPattern for a developer's tool, an IDE or a CI
// system, with the caller's own Kubernetes token:
//
//	source  a write URL of {uploads}/P/source.zip; the caller must be
//	        allowed to create Jobs in the namespace, as a build needs
//	log     a read URL of {projects}/P/logs/build.log; get Jobs
//	result  a read URL of {projects}/P/build/result.zip; get Jobs
//
// The project must be one the namespace's Organization may use there, as
// for a build.
type ProjectAPI struct {
	*Handler
}

func (a *ProjectAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ns, project, which := r.PathValue("namespace"), r.PathValue("project"), r.PathValue("blob")
	var req blob.GrantRequest
	g, err := a.projectGrant(r, ns, project, which, &req)
	if err != nil {
		a.fail(w, r, req, err)
		return
	}
	grants.WithLabelValues(string(req.Access), "granted").Inc()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(g)
}

func (a *ProjectAPI) projectGrant(r *http.Request, ns, project, which string, req *blob.GrantRequest) (blob.Grant, error) {
	ctx := r.Context()
	verb := "get"
	switch which {
	case blob.ProjectSource:
		verb, req.Access = "create", blob.AccessWrite
	case blob.ProjectLog, blob.ProjectResult:
		req.Access = blob.AccessRead
	default:
		return blob.Grant{}, &httpauth.Error{Status: http.StatusNotFound, Msg: fmt.Sprintf("%q is not a project blob; use %s, %s or %s", which, blob.ProjectSource, blob.ProjectLog, blob.ProjectResult)}
	}
	if err := blob.ValidateProject(project); err != nil {
		return blob.Grant{}, &httpauth.Error{Status: http.StatusBadRequest, Msg: err.Error()}
	}
	user, err := a.Reviewer.Authenticate(r)
	if err != nil {
		return blob.Grant{}, err
	}
	if err := a.Reviewer.Authorize(ctx, user, authorizationv1.ResourceAttributes{
		Namespace: ns, Verb: verb, Group: "batch", Resource: "jobs",
	}); err != nil {
		return blob.Grant{}, err
	}
	bs, err := a.project(ctx, project, ns, user.Username)
	if err != nil {
		return blob.Grant{}, err
	}
	signer, err := a.signer(ctx, bs)
	if err != nil {
		return blob.Grant{}, err
	}
	c := containers(bs)
	perms := sas.BlobPermissions{Read: true}
	switch which {
	case blob.ProjectSource:
		req.Container, req.Name, perms = c.Uploads, blob.SourceName(project), blob.WritePermissions
	case blob.ProjectLog:
		req.Container, req.Name = c.Projects, blob.LogName(project)
	case blob.ProjectResult:
		req.Container, req.Name = c.Projects, blob.ResultName(project)
	}
	ttl := a.MaxTTL
	if ttl <= 0 {
		ttl = DefaultMaxTTL
	}
	expiry := a.Clock.Now().Add(ttl).Truncate(time.Second)
	u, err := signer.SignURL(ctx, req.Container, req.Name, perms, expiry)
	if err != nil {
		return blob.Grant{}, &httpauth.Error{Status: http.StatusServiceUnavailable, Msg: fmt.Sprintf("sign a URL of %s/%s: %v", req.Container, req.Name, err)}
	}
	return blob.Grant{URL: u, Expiry: expiry}, nil
}
