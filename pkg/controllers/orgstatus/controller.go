// Package orgstatus keeps each org's quota ledger clean and its status
// current. A ledger entry leaves when its Pod finishes or is gone; an entry
// whose Pod never appears (a create refused after berth charged it) leaves
// after Grace. A live limited Pod the ledger lacks is recorded. The status
// counts workspaces, GPUs, running and queued builds. An org's Pods and Jobs
// are those in its namespaces, whatever labels they carry.
package orgstatus

import (
	"context"
	"fmt"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/controllers"
	"berth.dev/berth/pkg/controllers/buildqueue"
	"berth.dev/berth/pkg/quota"
	"berth.dev/berth/pkg/requests"
)

// Name is the controller's name.
const Name = "orgstatus"

// Coalesce is how long the controller gathers Pod and Job events before it
// reconciles their org: a burst of creates costs one ledger read and one
// status write, not one per Pod.
const Coalesce = time.Second

// Grace is how long a charged Pod may take to appear before its entry is
// taken for a create the API server refused after berth charged it (a name
// already taken, a ResourceQuota, a later webhook). A create that takes
// longer still is recorded again when it appears.
const Grace = 10 * time.Second

// Ledger is what the controller needs of the quota ledger.
type Ledger interface {
	Entries(ctx context.Context, org string) (map[types.UID]quota.Entry, error)
	Record(ctx context.Context, org string, add map[types.UID]quota.Entry) error
	Release(ctx context.Context, org string, uids []types.UID) error
}

// Controller cleans ledgers and writes Organization status.
type Controller struct {
	client client.Client // cached reads, writes
	reader client.Reader // exact reads, from the API server
	ledger Ledger
	clock  clock.Clock
	// gone holds the UIDs of Pods seen deleted, so that their charge is
	// released at once, while the cache may still lag.
	gone sync.Map
}

// NewController returns a Controller.
func NewController(c client.Client, reader client.Reader, ledger Ledger, clk clock.Clock) *Controller {
	return &Controller{client: c, reader: reader, ledger: ledger, clock: clk}
}

// Name returns the controller's name.
func (c *Controller) Name() string { return Name }

// Register adds the controller to the manager.
func (c *Controller) Register(mgr ctrl.Manager) error {
	toOrg := controllers.OrgOfNamespace(mgr.GetClient())
	return ctrl.NewControllerManagedBy(mgr).Named(Name).
		For(&berthv1alpha1.Organization{}).
		Watches(&corev1.Pod{}, coalesced(toOrg, func(e event.DeleteEvent) {
			c.gone.Store(e.Object.GetUID(), c.clock.Now())
		}), builder.WithPredicates(controllers.Labelled)).
		Watches(&batchv1.Job{}, coalesced(toOrg, nil), builder.WithPredicates(controllers.Labelled)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(controllers.NamespaceToOrg)).
		Complete(c)
}

// coalesced enqueues the org of the object's namespace Coalesce from now;
// events for the same org meanwhile join that one request. onDelete, if
// set, sees deletions.
func coalesced(toOrg handler.MapFunc, onDelete func(event.DeleteEvent)) handler.EventHandler {
	add := func(ctx context.Context, obj client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		for _, r := range toOrg(ctx, obj) {
			q.AddAfter(r, Coalesce)
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.Object, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.ObjectNew, q)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if onDelete != nil {
				onDelete(e)
			}
			add(ctx, e.Object, q)
		},
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.Object, q)
		},
	}
}

// Reconcile cleans one org's ledger and updates its status.
func (c *Controller) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	org := &berthv1alpha1.Organization{}
	if err := c.client.Get(ctx, req.NamespacedName, org); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	now := c.clock.Now()
	c.forgetOldDeletions(now)
	entries, err := c.ledger.Entries(ctx, org.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	pods, err := controllers.OrgPods(ctx, c.client, org.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	usage, missing := Live(org, pods, entries, now)
	stale, unseen, wait := c.judge(entries, pods, now)
	if len(unseen) > 0 {
		// Entries past Grace with no Pod in the cache: ask the API server.
		live, err := controllers.OrgPods(ctx, c.reader, org.Name)
		if err != nil {
			return ctrl.Result{}, err
		}
		alive := map[types.UID]bool{}
		for i := range live {
			alive[live[i].UID] = !controllers.PodFinished(&live[i])
		}
		for _, uid := range unseen {
			if !alive[uid] {
				stale = append(stale, uid)
			}
		}
	}
	if len(stale) > 0 {
		if err := c.ledger.Release(ctx, org.Name, stale); err != nil {
			return ctrl.Result{}, fmt.Errorf("release ledger entries of org %s: %w", org.Name, err)
		}
	}
	if len(missing) > 0 {
		// Pods admitted before the org had a limit: the limit counts them.
		if err := c.ledger.Record(ctx, org.Name, missing); err != nil {
			return ctrl.Result{}, fmt.Errorf("record live Pods in the ledger of org %s: %w", org.Name, err)
		}
	}
	if err := c.writeStatus(ctx, org, usage); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: wait}, nil
}

// judge sorts the ledger's entries by what the cache knows of their Pods:
// stale (finished, or seen deleted), unseen (not in the cache past Grace:
// to be asked of the API server), or too young to judge, in which case
// wait says when to look again.
func (c *Controller) judge(entries map[types.UID]quota.Entry, pods []corev1.Pod, now time.Time) (stale, unseen []types.UID, wait time.Duration) {
	byUID := make(map[types.UID]*corev1.Pod, len(pods))
	for i := range pods {
		byUID[pods[i].UID] = &pods[i]
	}
	for uid, e := range entries {
		if p, ok := byUID[uid]; ok {
			if controllers.PodFinished(p) {
				stale = append(stale, uid)
			}
			continue
		}
		if _, deleted := c.gone.Load(uid); deleted {
			stale = append(stale, uid)
			continue
		}
		if age := now.Sub(e.Admitted); age < Grace {
			// The ledger keeps seconds: look again a second late.
			wait = max(wait, Grace-age+time.Second)
			continue
		}
		unseen = append(unseen, uid)
	}
	return stale, unseen, wait
}

func (c *Controller) writeStatus(ctx context.Context, org *berthv1alpha1.Organization, usage quota.Usage) error {
	namespaces, err := controllers.OrgNamespaces(ctx, c.client, org.Name)
	if err != nil {
		return err
	}
	jobs, err := controllers.OrgBuilds(ctx, c.client, namespaces)
	if err != nil {
		return err
	}
	plan := buildqueue.Plan(org, jobs)
	status := org.Status.DeepCopy()
	status.ObservedGeneration = org.Generation
	status.Workspaces = int32(usage.Workspaces)
	status.GPUs = int32(usage.GPUs)
	status.RunningBuilds = int32(plan.Running)
	status.QueuedBuilds = int32(len(plan.Queued))
	if equality.Semantic.DeepEqual(status, &org.Status) {
		return nil
	}
	patch := client.MergeFrom(org.DeepCopy())
	org.Status = *status
	if err := c.client.Status().Patch(ctx, org, patch); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("update status of org %s: %w", org.Name, err)
	}
	return nil
}

// Live counts an org's running workspaces and GPUs from its Pods, and
// returns the ledger entries that its live limited Pods lack.
func Live(org *berthv1alpha1.Organization, pods []corev1.Pod, entries map[types.UID]quota.Entry, now time.Time) (quota.Usage, map[types.UID]quota.Entry) {
	var u quota.Usage
	missing := map[types.UID]quota.Entry{}
	for i := range pods {
		p := &pods[i]
		class, ok := berthv1alpha1.ParseClass(p.Labels[berthv1alpha1.LabelClass])
		if !ok || controllers.PodFinished(p) {
			continue
		}
		e := quota.Entry{Class: class, GPUs: requests.GPUs(&p.Spec), Admitted: now.Truncate(time.Second)}
		u = u.Add(e)
		if _, ok := entries[p.UID]; !ok && p.DeletionTimestamp == nil && quota.Limited(org, class, e.GPUs) {
			missing[p.UID] = e
		}
	}
	return u, missing
}

// forgetOldDeletions drops deletions of Pods no ledger held.
func (c *Controller) forgetOldDeletions(now time.Time) {
	c.gone.Range(func(k, v any) bool {
		if now.Sub(v.(time.Time)) > 5*time.Minute {
			c.gone.Delete(k)
		}
		return true
	})
}
