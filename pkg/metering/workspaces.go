package metering

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/controllers"
)

// stopPeriods names the pseudo-Pod UIDs of workspaces' stop periods.
var stopPeriods = uuid.MustParse("6f1d3b0e-5b1a-4c3e-9a63-2f0c6a1d2b7e")

// WorkspaceMeter keeps the workspaces table in step with the Workspaces,
// and charges a stopped workspace's claims: their requested size, in
// GiB-hours, from the stop to the next start (or the Workspace's delete),
// since a stopped workspace's disk still costs. Each stop period is
// metered as a Pod of its own that runs no time and holds the claims: its
// UID is derived from the Workspace's UID and the stop's time, so a
// restarted meter writes the same rows. The finalizer keeps a deleted
// Workspace until its last period is written.
//
// Only a Workspace's last stop is on record: a workspace stopped and woken
// twice while berth-meter is down has the first of those stops charged
// nothing.
type WorkspaceMeter struct {
	*Meter

	mu sync.Mutex
	// ended holds, per Workspace, the last stop period this process wrote
	// to its end: one entry per Workspace, gone with it.
	ended map[types.UID]string
}

// Register adds the workspace meter to mgr. The Meter must be registered
// first.
func (w *WorkspaceMeter) Register(mgr ctrl.Manager) error {
	w.ended = map[types.UID]string{}
	return ctrl.NewControllerManagedBy(mgr).Named("workspacemeter").
		For(&berthv1alpha1.Workspace{}).
		Complete(w)
}

// Reconcile mirrors one Workspace and writes its stop period up to now.
func (w *WorkspaceMeter) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var ws berthv1alpha1.Workspace
	if err := w.Client.Get(ctx, req.NamespacedName, &ws); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	deleting := ws.DeletionTimestamp != nil
	if !deleting && !controllerutil.ContainsFinalizer(&ws, Finalizer) {
		patch := client.MergeFromWithOptions(ws.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.AddFinalizer(&ws, Finalizer)
		if err := w.Client.Patch(ctx, &ws, patch); err != nil {
			return reconcile.Result{}, fmt.Errorf("add the metering finalizer: %w", err)
		}
	}
	org, err := controllers.NamespaceOrg(ctx, w.Client, ws.Namespace)
	if err != nil {
		return reconcile.Result{}, err
	}
	if org == "" {
		org = "-"
	}
	now := w.Clock.Now()
	if err := w.mirror(ctx, &ws, org, now); err != nil {
		return reconcile.Result{}, err
	}
	result := reconcile.Result{}
	if p, ok, err := w.stopPeriod(ctx, &ws, org); err != nil {
		return result, err
	} else if ok {
		switch {
		case p.End.IsZero():
			if err := w.write(ctx, p, now); err != nil {
				return result, err
			}
			next := now.Truncate(w.Interval).Add(w.Interval)
			result.RequeueAfter = next.Sub(now) + time.Second
		case !w.wrote(ws.UID, p.UID):
			if err := w.end(ctx, p); err != nil {
				return result, err
			}
			w.mu.Lock()
			w.ended[ws.UID] = p.UID
			w.mu.Unlock()
		}
	}
	if deleting && controllerutil.ContainsFinalizer(&ws, Finalizer) {
		patch := client.MergeFromWithOptions(ws.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.RemoveFinalizer(&ws, Finalizer)
		if err := w.Client.Patch(ctx, &ws, patch); client.IgnoreNotFound(err) != nil {
			return result, fmt.Errorf("remove the metering finalizer: %w", err)
		}
		w.mu.Lock()
		delete(w.ended, ws.UID)
		w.mu.Unlock()
	}
	return result, nil
}

// wrote reports whether this process wrote the stop period to its end.
func (w *WorkspaceMeter) wrote(ws types.UID, period string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ended[ws] == period
}

// mirror writes the Workspace's row of the workspaces table.
func (w *WorkspaceMeter) mirror(ctx context.Context, ws *berthv1alpha1.Workspace, org string, now time.Time) error {
	state := "running"
	switch {
	case ws.DeletionTimestamp != nil:
		state = "deleted"
	case !ws.Spec.Started, ws.Status.Phase == berthv1alpha1.WorkspaceStopped, ws.Status.Phase == berthv1alpha1.WorkspaceLost:
		state = "stopped"
	}
	if _, err := w.DB.Exec(ctx, "INSERT INTO orgs (name) VALUES ($1) ON CONFLICT DO NOTHING", org); err != nil {
		return fmt.Errorf("record org %s: %w", org, err)
	}
	_, err := w.DB.Exec(ctx, `INSERT INTO workspaces (org, namespace, name, user_name, state, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (namespace, name) DO UPDATE SET org = EXCLUDED.org, user_name = EXCLUDED.user_name, state = EXCLUDED.state, updated_at = EXCLUDED.updated_at`,
		org, ws.Namespace, ws.Name, ws.Spec.Template.Labels[berthv1alpha1.LabelUser], state, now)
	if err != nil {
		return fmt.Errorf("mirror Workspace %s/%s: %w", ws.Namespace, ws.Name, err)
	}
	return nil
}

// stopPeriod returns the Workspace's last stop as a Pod that holds its
// claims: from the stop to the start after it, or to the Workspace's
// delete, or open. ok is false when the workspace never stopped.
func (w *WorkspaceMeter) stopPeriod(ctx context.Context, ws *berthv1alpha1.Workspace, org string) (Pod, bool, error) {
	stopped := ws.Status.StoppedAt
	if stopped == nil {
		return Pod{}, false, nil
	}
	p := Pod{
		UID:       StopPeriodUID(ws.UID, stopped.Time),
		Namespace: ws.Namespace, Name: ws.Name, Org: org, Class: string(berthv1alpha1.ClassWorkspace),
		User: ws.Spec.Template.Labels[berthv1alpha1.LabelUser], Workspace: ws.Name,
		Start: stopped.Time, Stopped: true,
	}
	switch {
	case ws.Status.StartedAt != nil && ws.Status.StartedAt.After(stopped.Time):
		p.End = ws.Status.StartedAt.Time
	case ws.DeletionTimestamp != nil:
		p.End = ws.DeletionTimestamp.Time
	}
	for _, name := range ws.Status.Claims {
		var pvc corev1.PersistentVolumeClaim
		if err := w.Client.Get(ctx, client.ObjectKey{Namespace: ws.Namespace, Name: name}, &pvc); err != nil {
			if client.IgnoreNotFound(err) != nil {
				return Pod{}, false, err
			}
			continue
		}
		p.VolumeGiB += gib(pvc.Spec.Resources.Requests.Storage())
	}
	return p, true, nil
}

// StopPeriodUID is the UID the stop of Workspace uid at stopped is metered
// under: the same for every meter, at every restart.
func StopPeriodUID(uid types.UID, stopped time.Time) string {
	return uuid.NewSHA1(stopPeriods, []byte(string(uid)+"@"+stopped.UTC().Format(time.RFC3339Nano))).String()
}
