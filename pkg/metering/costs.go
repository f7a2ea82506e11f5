package metering

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/kubernetes"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/httpauth"
)

// CostsPattern is where a namespace's running workspaces' costs are read.
const CostsPattern = "GET /v1/namespaces/{namespace}/costs"

// costWindow is how far back the last metered interval of a running
// workspace is looked for.
const costWindow = 15 * time.Minute

// CostAPI serves GET /v1/namespaces/{ns}/costs: each running workspace's
// cost an hour, from its Pod's last metered interval (the cost charged
// over the seconds it ran). The caller must be allowed to list workspaces
// in the namespace, as kubectl berth ls does, checked with a
// SubjectAccessReview.
type CostAPI struct {
	DB   Querier
	Kube kubernetes.Interface
	// Org returns the namespace's org ("" for none).
	Org func(ctx context.Context, namespace string) (string, error)
	Now func() time.Time
}

// ServeHTTP answers one namespace's costs.
func (a *CostAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	auth := httpauth.Reviewer{Kube: a.Kube}
	caller, err := auth.Authenticate(r)
	if err != nil {
		httpauth.Fail(w, err, http.StatusUnauthorized)
		return
	}
	ns := r.PathValue("namespace")
	if err := auth.Authorize(r.Context(), caller, authorizationv1.ResourceAttributes{
		Namespace: ns, Verb: "list", Group: berthv1alpha1.GroupName, Resource: "workspaces",
	}); err != nil {
		httpauth.Fail(w, err, http.StatusForbidden)
		return
	}
	org, err := a.Org(r.Context(), ns)
	if err != nil {
		httpauth.Fail(w, fmt.Errorf("read namespace %s: %w", ns, err), http.StatusServiceUnavailable)
		return
	}
	if org == "" {
		httpauth.Fail(w, errors.New("namespace "+ns+" belongs to no Organization; berth meters no workspace there"), http.StatusNotFound)
		return
	}
	costs, err := WorkspaceCosts(r.Context(), a.DB, org, ns, a.Now())
	if err != nil {
		httpauth.Fail(w, fmt.Errorf("read costs: %w", err), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(costs)
}

// WorkspaceCosts returns what each running workspace of the namespace
// costs an hour, by its Pod's last interval metered within costWindow of
// now. Pods that ended are left out.
func WorkspaceCosts(ctx context.Context, db Querier, org, ns string, now time.Time) (berthv1alpha1.WorkspaceCosts, error) {
	out := berthv1alpha1.WorkspaceCosts{Namespace: ns, Workspaces: []berthv1alpha1.WorkspaceCost{}}
	rows, err := db.Query(ctx, `SELECT DISTINCT ON (u.workspace) u.workspace, u.cost_dollars / u.running_seconds * 3600, u.spot
		FROM usage_intervals u
		WHERE u.org = $1 AND u.namespace = $2 AND u.class = $3 AND u.workspace <> '' AND u.interval_start >= $4
			AND u.running_seconds > 0 AND NOT EXISTS (SELECT 1 FROM metered_ends e WHERE e.uid = u.uid)
		ORDER BY u.workspace, u.interval_start DESC`, org, ns, string(berthv1alpha1.ClassWorkspace), now.Add(-costWindow))
	if err != nil {
		return out, err
	}
	defer rows.Close()
	for rows.Next() {
		var c berthv1alpha1.WorkspaceCost
		if err := rows.Scan(&c.Name, &c.DollarsPerHour, &c.Spot); err != nil {
			return out, err
		}
		out.Workspaces = append(out.Workspaces, c)
	}
	return out, rows.Err()
}
