// Package buildqueue releases queued build Jobs. Builds are admitted
// suspended; this controller unsuspends them per org, oldest first, while the
// org runs fewer than spec.maxConcurrentBuilds. An org's builds are the build
// Jobs in its namespaces, never the Jobs that carry its name in a label. It
// counts on the API server, not a cache, and runs only on the leader, so it
// never releases one too many.
package buildqueue

import (
	"context"
	"fmt"
	"sort"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/controllers"
)

// Name is the controller's name.
const Name = "buildqueue"

// Controller releases queued builds.
type Controller struct {
	client client.Client // cached reads, writes
	reader client.Reader // exact reads, from the API server
	audit  *controllers.Auditor
}

// NewController returns a Controller. audit records each release for the
// org's audit log; nil records none.
func NewController(c client.Client, reader client.Reader, audit *controllers.Auditor) *Controller {
	return &Controller{client: c, reader: reader, audit: audit}
}

// Name returns the controller's name.
func (c *Controller) Name() string { return Name }

// Register adds the controller to the manager.
func (c *Controller) Register(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).Named(Name).
		// The queue depends on an org's spec and its Jobs, not its status,
		// which orgstatus rewrites as Pods come and go.
		For(&berthv1alpha1.Organization{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&batchv1.Job{}, handler.EnqueueRequestsFromMapFunc(controllers.OrgOfNamespace(mgr.GetClient())),
			builder.WithPredicates(controllers.Labelled)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(controllers.NamespaceToOrg)).
		Complete(c)
}

// Reconcile releases what fits of one org's queue.
func (c *Controller) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	org := &berthv1alpha1.Organization{}
	if err := c.client.Get(ctx, req.NamespacedName, org); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	namespaces, err := controllers.OrgNamespaces(ctx, c.client, org.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	jobs, err := controllers.OrgBuilds(ctx, c.reader, namespaces)
	if err != nil {
		return ctrl.Result{}, err
	}
	plan := Plan(org, jobs)
	log := ctrl.LoggerFrom(ctx)
	for _, j := range plan.Release {
		patch := client.MergeFromWithOptions(j.DeepCopy(), client.MergeFromWithOptimisticLock{})
		j.Spec.Suspend = ptr.To(false)
		if err := c.client.Patch(ctx, j, patch); err != nil {
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				return ctrl.Result{RequeueAfter: time.Second}, nil // decide again on what changed
			}
			return ctrl.Result{}, fmt.Errorf("release build %s/%s: %w", j.Namespace, j.Name, err)
		}
		log.Info("released build", "org", org.Name, "job", client.ObjectKeyFromObject(j),
			"queuedAt", j.Annotations[berthv1alpha1.AnnotationQueuedAt], "running", plan.Running+1)
		c.audit.Record(org, j, corev1.EventTypeNormal, berthv1alpha1.AuditBuildReleased, "Release",
			"build Job %s/%s (project %q, user %q) released, queued since %s; %d of the org's builds run",
			j.Namespace, j.Name, j.Labels[berthv1alpha1.LabelProject], j.Labels[berthv1alpha1.LabelUser],
			j.Annotations[berthv1alpha1.AnnotationQueuedAt], plan.Running+1)
		plan.Running++
	}
	return ctrl.Result{}, nil
}

// Decision is what Plan decided for one org.
type Decision struct {
	Running int
	Queued  []*batchv1.Job // oldest first, the released ones included
	Release []*batchv1.Job
}

// Plan decides which of an org's queued builds to release: the oldest, as
// many as spec.maxConcurrentBuilds leaves room for (all when unset).
func Plan(org *berthv1alpha1.Organization, jobs []batchv1.Job) Decision {
	var d Decision
	for i := range jobs {
		j := &jobs[i]
		if controllers.JobFinished(j) || j.DeletionTimestamp != nil {
			continue
		}
		if ptr.Deref(j.Spec.Suspend, false) {
			if j.Annotations[berthv1alpha1.AnnotationQueuedAt] != "" {
				d.Queued = append(d.Queued, j)
			}
			continue
		}
		d.Running++
	}
	sort.SliceStable(d.Queued, func(a, b int) bool {
		ja, jb := d.Queued[a], d.Queued[b]
		ta, tb := QueuedAt(ja), QueuedAt(jb)
		if !ta.Equal(tb) {
			return ta.Before(tb)
		}
		if !ja.CreationTimestamp.Equal(&jb.CreationTimestamp) {
			return ja.CreationTimestamp.Before(&jb.CreationTimestamp)
		}
		return ja.Namespace+"/"+ja.Name < jb.Namespace+"/"+jb.Name
	})
	slots := len(d.Queued)
	if m := org.Spec.MaxConcurrentBuilds; m != nil {
		slots = max(0, int(*m)-d.Running)
	}
	d.Release = d.Queued[:min(slots, len(d.Queued))]
	return d
}

// QueuedAt is when a queued build was admitted; zero when it is not queued.
func QueuedAt(job *batchv1.Job) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, job.Annotations[berthv1alpha1.AnnotationQueuedAt])
	return t
}
