package kubectlberth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// Workspace actions of berth-manager's workspace API.
const (
	ActionWake  = "wake"
	ActionStop  = "stop"
	ActionTouch = "touch"
)

// WorkspaceAction asks berth-manager to wake, stop or touch a workspace,
// as the developer (who needs update on that Workspace). A wake with
// wait > 0 returns once the workspace runs, or with admission's reason
// when its start is refused.
func (c *Client) WorkspaceAction(ctx context.Context, name, action string, wait time.Duration) (berthv1alpha1.WorkspaceAnswer, error) {
	var a berthv1alpha1.WorkspaceAnswer
	u := fmt.Sprintf("%s/v1/namespaces/%s/workspaces/%s/%s", strings.TrimSuffix(c.ManagerURL, "/"),
		url.PathEscape(c.Namespace), url.PathEscape(name), action)
	hc := *c.Manager
	if wait > 0 {
		u += "?wait=" + wait.String()
		hc.Timeout = wait + 30*time.Second
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return a, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return a, fmt.Errorf("%s workspace %s: %w", action, name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return a, fmt.Errorf("%s workspace %s: %w", action, name, err)
	}
	if resp.StatusCode >= 400 && resp.StatusCode != http.StatusConflict && resp.StatusCode != http.StatusGatewayTimeout {
		return a, fmt.Errorf("%s workspace %s: %s: %s", action, name, resp.Status, answerMessage(b))
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return a, fmt.Errorf("%s workspace %s: the answer is not a workspace's state: %q", action, name, b)
	}
	switch resp.StatusCode {
	case http.StatusConflict:
		return a, fmt.Errorf("workspace %s did not start: %s", name, a.Message)
	case http.StatusGatewayTimeout:
		return a, fmt.Errorf("workspace %s is not running after %s (phase %s); kubectl berth ls shows it", name, wait, a.Phase)
	}
	return a, nil
}

// WorkspaceRow is one line of kubectl berth ls.
type WorkspaceRow struct {
	Name      string
	User      string
	Phase     berthv1alpha1.WorkspacePhase
	Idle      string // since the last activity, while it runs
	StoppedBy berthv1alpha1.StopReason
	Node      string
	Pool      string
	// Cost is what it costs an hour now, as berth-meter metered it: empty
	// when berth-meter is not reached or has no interval of it yet.
	Cost    string
	Age     string
	Pod     string
	Message string
}

// Workspaces lists the namespace's workspaces, running and stopped, of
// user when it is set. The pool comes from the node's berth.dev/pool
// label, when the developer may read nodes; the cost an hour from
// berth-meter, when the client reaches it.
func (c *Client) Workspaces(ctx context.Context, user string, now time.Time) (*berthv1alpha1.WorkspaceList, []WorkspaceRow, error) {
	var list berthv1alpha1.WorkspaceList
	if err := c.Berth.List(ctx, &list, client.InNamespace(c.Namespace)); err != nil {
		return nil, nil, fmt.Errorf("list the workspaces of namespace %q: %w", c.Namespace, err)
	}
	costs := map[string]string{}
	if c.Meter != nil {
		var wc berthv1alpha1.WorkspaceCosts
		if err := c.meterGet(ctx, "/v1/namespaces/"+url.PathEscape(c.Namespace)+"/costs", &wc); err != nil {
			return nil, nil, fmt.Errorf("the workspaces' costs from berth-meter: %w", err)
		}
		for _, w := range wc.Workspaces {
			costs[w.Name] = fmt.Sprintf("$%.4f", w.DollarsPerHour)
		}
	}
	pools := map[string]string{}
	pool := func(node string) string {
		if node == "" {
			return ""
		}
		if p, ok := pools[node]; ok {
			return p
		}
		n, err := c.Kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		pools[node] = "-" // not readable by this user, or gone
		if err == nil {
			pools[node] = n.Labels[berthv1alpha1.LabelPool]
		}
		return pools[node]
	}
	kept := list.Items[:0]
	var rows []WorkspaceRow
	for _, ws := range list.Items {
		u := ws.Spec.Template.Labels[berthv1alpha1.LabelUser]
		if user != "" && u != user {
			continue
		}
		kept = append(kept, ws)
		r := WorkspaceRow{Name: ws.Name, User: u, Phase: ws.Status.Phase, StoppedBy: ws.Status.StoppedBy,
			Node: ws.Status.NodeName, Pool: pool(ws.Status.NodeName), Pod: ws.Status.PodName, Message: ws.Status.Message,
			Age: since(ws.CreationTimestamp.Time, now)}
		if ws.Status.Phase == berthv1alpha1.WorkspaceRunning {
			r.Cost = costs[ws.Name]
		}
		if ws.Status.Phase == berthv1alpha1.WorkspaceRunning && ws.Status.LastActivity != nil {
			r.Idle = since(ws.Status.LastActivity.Time, now)
		}
		rows = append(rows, r)
	}
	list.Items = kept
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return &list, rows, nil
}

// QueueRow is one line of kubectl berth queue.
type QueueRow struct {
	Build    string
	Project  string
	State    string // queued, running, succeeded, failed
	Position int    // among the namespace's queued builds, from 1; 0 when not queued
	Age      string
}

// OrgSlots is the org's build queue as its Organization's status says.
type OrgSlots struct {
	Org string
	// Readable is false when the developer may not read the Organization.
	Readable            bool
	MaxConcurrentBuilds *int32
	Running, Queued     int32
}

// Queue lists the namespace's builds, queued ones first in the order berth
// releases them, and the org's slots when the developer may read its
// Organization (nil otherwise).
func (c *Client) Queue(ctx context.Context, now time.Time) (*batchv1.JobList, []QueueRow, *OrgSlots, error) {
	jobs, err := c.Kube.BatchV1().Jobs(c.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: berthv1alpha1.LabelClass + "=" + string(berthv1alpha1.ClassBuild),
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("list the builds of namespace %q: %w", c.Namespace, err)
	}
	sort.SliceStable(jobs.Items, func(i, j int) bool {
		return jobs.Items[i].CreationTimestamp.Before(&jobs.Items[j].CreationTimestamp)
	})
	rows := make([]QueueRow, 0, len(jobs.Items))
	queued := 0
	for _, j := range jobs.Items {
		r := QueueRow{Build: j.Name, Project: j.Labels[berthv1alpha1.LabelProject], State: "running", Age: since(j.CreationTimestamp.Time, now)}
		if done, failed := finished(&j); done {
			r.State = "succeeded"
			if failed != nil {
				r.State = "failed"
			}
		} else if ptr.Deref(j.Spec.Suspend, false) {
			queued++
			r.State, r.Position = "queued", queued
		}
		rows = append(rows, r)
	}
	sort.SliceStable(rows, func(i, j int) bool {
		return rows[i].Position > 0 && (rows[j].Position == 0 || rows[i].Position < rows[j].Position)
	})
	return jobs, rows, c.orgSlots(ctx), nil
}

// orgSlots reads the namespace's Organization, or returns nil when the
// developer may not (Namespaces and Organizations are cluster-scoped).
func (c *Client) orgSlots(ctx context.Context) *OrgSlots {
	var ns corev1.Namespace
	if err := c.Berth.Get(ctx, client.ObjectKey{Name: c.Namespace}, &ns); err != nil {
		return nil
	}
	org := ns.Labels[berthv1alpha1.LabelOrg]
	if org == "" {
		return nil
	}
	var o berthv1alpha1.Organization
	if err := c.Berth.Get(ctx, client.ObjectKey{Name: org}, &o); err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
			return &OrgSlots{Org: org}
		}
		return nil
	}
	return &OrgSlots{Org: org, Readable: true, MaxConcurrentBuilds: o.Spec.MaxConcurrentBuilds, Running: o.Status.RunningBuilds, Queued: o.Status.QueuedBuilds}
}

// since is the time from t to now as kubectl prints ages.
func since(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	return duration.HumanDuration(now.Sub(t))
}

// Orgs reads the Organizations: all of them, or the namespace's. Both
// are cluster-scoped, so a developer may need the platform team's leave.
func (c *Client) Orgs(ctx context.Context, all bool) (*berthv1alpha1.OrganizationList, error) {
	var list berthv1alpha1.OrganizationList
	forbidden := func(err error) error {
		if apierrors.IsForbidden(err) {
			return fmt.Errorf("%w; Organizations are cluster-scoped: ask the platform team for get and list on organizations.berth.dev, or see your namespace's builds with kubectl berth queue", err)
		}
		return err
	}
	if all {
		if err := c.Berth.List(ctx, &list); err != nil {
			return nil, forbidden(err)
		}
		return &list, nil
	}
	var ns corev1.Namespace
	if err := c.Berth.Get(ctx, client.ObjectKey{Name: c.Namespace}, &ns); err != nil {
		return nil, forbidden(fmt.Errorf("read namespace %q: %w", c.Namespace, err))
	}
	name := ns.Labels[berthv1alpha1.LabelOrg]
	if name == "" {
		return nil, fmt.Errorf("namespace %q belongs to no Organization (label %s); --all lists them all", c.Namespace, berthv1alpha1.LabelOrg)
	}
	var org berthv1alpha1.Organization
	if err := c.Berth.Get(ctx, client.ObjectKey{Name: name}, &org); err != nil {
		return nil, forbidden(fmt.Errorf("read Organization %q of namespace %q: %w", name, c.Namespace, err))
	}
	list.Items = []berthv1alpha1.Organization{org}
	return &list, nil
}
