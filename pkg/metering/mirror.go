package metering

import (
	"context"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/controllers"
)

// QuotaMirror keeps the quotas table in step with the Organizations: each
// org's limits, removed with the org.
type QuotaMirror struct {
	Client client.Client
	DB     Store
}

// Register adds the mirror to mgr.
func (m *QuotaMirror) Register(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).Named("quotamirror").For(&berthv1alpha1.Organization{}).Complete(m)
}

// Reconcile writes one org's limits.
func (m *QuotaMirror) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var org berthv1alpha1.Organization
	if err := m.Client.Get(ctx, req.NamespacedName, &org); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return reconcile.Result{}, err
		}
		_, err := m.DB.Exec(ctx, "DELETE FROM quotas WHERE org = $1", req.Name)
		return reconcile.Result{}, err
	}
	s := org.Spec
	if _, err := m.DB.Exec(ctx, "INSERT INTO orgs (name) VALUES ($1) ON CONFLICT DO NOTHING", org.Name); err != nil {
		return reconcile.Result{}, fmt.Errorf("record org %s: %w", org.Name, err)
	}
	_, err := m.DB.Exec(ctx, `INSERT INTO quotas (org, max_workspaces, max_gpus, max_concurrent_builds, updated_at) VALUES ($1, $2, $3, $4, now())
		ON CONFLICT (org) DO UPDATE SET max_workspaces = EXCLUDED.max_workspaces, max_gpus = EXCLUDED.max_gpus,
			max_concurrent_builds = EXCLUDED.max_concurrent_builds, updated_at = EXCLUDED.updated_at`,
		org.Name, s.MaxWorkspaces, s.MaxGPUs, s.MaxConcurrentBuilds)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("mirror the quotas of org %s: %w", org.Name, err)
	}
	return reconcile.Result{}, nil
}

// BuildMirror keeps the builds table in step with the build Jobs: when each
// was queued (berth.dev/queued-at), released (the Job's start) and
// finished. Each write sets the Job's absolute times.
type BuildMirror struct {
	Client client.Client
	DB     Store
}

// Register adds the mirror to mgr, for Jobs labelled berth.dev/class=build.
func (m *BuildMirror) Register(mgr ctrl.Manager) error {
	builds := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetLabels()[berthv1alpha1.LabelClass] == string(berthv1alpha1.ClassBuild)
	})
	return ctrl.NewControllerManagedBy(mgr).Named("buildmirror").
		For(&batchv1.Job{}, builder.WithPredicates(builds)).Complete(m)
}

// Reconcile writes one build's times.
func (m *BuildMirror) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var job batchv1.Job
	if err := m.Client.Get(ctx, req.NamespacedName, &job); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if job.Labels[berthv1alpha1.LabelClass] != string(berthv1alpha1.ClassBuild) {
		return reconcile.Result{}, nil
	}
	org, err := controllers.NamespaceOrg(ctx, m.Client, job.Namespace)
	if err != nil {
		return reconcile.Result{}, err
	}
	if org == "" {
		org = "-"
	}
	var queued, released, finished *time.Time
	if t, err := time.Parse(time.RFC3339, job.Annotations[berthv1alpha1.AnnotationQueuedAt]); err == nil {
		queued = &t
	}
	if job.Status.StartTime != nil {
		released = &job.Status.StartTime.Time
	}
	var succeeded *bool
	for _, c := range job.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			t, ok := c.LastTransitionTime.Time, c.Type == batchv1.JobComplete
			finished, succeeded = &t, &ok
		}
	}
	if job.Status.CompletionTime != nil {
		finished = &job.Status.CompletionTime.Time
	}
	_, err = m.DB.Exec(ctx, `INSERT INTO builds (uid, org, namespace, name, project, user_name, queued_at, released_at, finished_at, succeeded)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		ON CONFLICT (uid) DO UPDATE SET org = EXCLUDED.org, project = EXCLUDED.project, user_name = EXCLUDED.user_name,
			queued_at = EXCLUDED.queued_at, released_at = EXCLUDED.released_at, finished_at = EXCLUDED.finished_at,
			succeeded = EXCLUDED.succeeded`,
		string(job.UID), org, job.Namespace, job.Name, job.Labels[berthv1alpha1.LabelProject], job.Labels[berthv1alpha1.LabelUser],
		queued, released, finished, succeeded)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("mirror build %s/%s: %w", job.Namespace, job.Name, err)
	}
	return reconcile.Result{}, nil
}
