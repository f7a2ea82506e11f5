package blob

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// The blobs of a project a developer reaches through berth-manager's
// project API, POST /v1/namespaces/{ns}/projects/{project}/{blob}.
const (
	// ProjectSource is the project's source archive, written by the
	// developer (create jobs in the namespace).
	ProjectSource = "source"
	// ProjectLog is the last build's log (get jobs).
	ProjectLog = "log"
	// ProjectResult is the last build's result.zip (get jobs).
	ProjectResult = "result"
)

// ProjectPath is the project API's path of one blob of a project.
func ProjectPath(namespace, project, which string) string {
	return fmt.Sprintf("/v1/namespaces/%s/projects/%s/%s", url.PathEscape(namespace), url.PathEscape(project), which)
}

// ProjectClient asks berth-manager's project API for URLs of a project's
// sources, log and result, as a developer: HTTP carries the developer's
// own credentials (a bearer token the API server accepts), and
// berth-manager checks them with TokenReview and SubjectAccessReview.
//
// It is a Granter for a GrantStore whose requests name the project's
// blobs by their default containers: berth-manager answers with the
// org's own container in the URL.
type ProjectClient struct {
	ManagerURL string
	Namespace  string
	Project    string
	HTTP       *http.Client
}

// Grant asks for the URL of one of the project's three blobs.
func (c *ProjectClient) Grant(ctx context.Context, req GrantRequest) (Grant, error) {
	which := ""
	switch {
	case req.Name == SourceName(c.Project) && req.Access == AccessWrite:
		which = ProjectSource
	case req.Name == LogName(c.Project) && req.Access == AccessRead:
		which = ProjectLog
	case req.Name == ResultName(c.Project) && req.Access == AccessRead:
		which = ProjectResult
	default:
		return Grant{}, Permanent(fmt.Errorf("the project API has no %s URL of %s/%s", req.Access, req.Container, req.Name))
	}
	what := fmt.Sprintf("ask berth-manager at %s for the %s URL of project %q in namespace %q", c.ManagerURL, which, c.Project, c.Namespace)
	return postGrant(ctx, c.HTTP, strings.TrimSuffix(c.ManagerURL, "/")+ProjectPath(c.Namespace, c.Project, which), "", nil, what)
}
