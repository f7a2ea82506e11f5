// Package orgstatus keeps each org's quota ledger clean and its status
// current. A ledger entry leaves when its Pod finishes or is gone (a Pod
// whose creation failed after admission never appears, and its entry goes
// after a grace period). The status counts workspaces, GPUs, running and
// queued builds.
package orgstatus

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/equality"
	kerrors "k8s.io/apimachinery/pkg/api/errors"
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
	"berth.dev/berth/webhooks"
)

// Name is the controller's name.
const Name = "orgstatus"

// Coalesce is how long the controller gathers Pod and Job events before it
// reconciles their org: a burst of creates costs one ledger read and one
// status write, not one per Pod.
const Coalesce = time.Second

// Grace is how long an admitted Pod may take to appear before its ledger
// entry is taken for a failed creation.
const Grace = 30 * time.Second

// Controller cleans ledgers and writes Organization status.
type Controller struct {
	client client.Client
	reader client.Reader
	ledger *quota.Ledger
	clock  clock.Clock
	// gone holds the UIDs and quota tokens of Pods seen deleted, so their
	// charge is released at once rather than after the grace period.
	gone sync.Map
}

// NewController returns a Controller.
func NewController(c client.Client, reader client.Reader, ledger *quota.Ledger, clk clock.Clock) *Controller {
	return &Controller{client: c, reader: reader, ledger: ledger, clock: clk}
}

// Name returns the controller's name.
func (c *Controller) Name() string { return Name }

// Register adds the controller to the manager.
func (c *Controller) Register(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).Named(Name).
		For(&berthv1alpha1.Organization{}).
		Watches(&corev1.Pod{}, c.podHandler(), builder.WithPredicates(controllers.Labelled)).
		Watches(&batchv1.Job{}, coalesced(nil), builder.WithPredicates(controllers.Labelled)).
		Complete(c)
}

// podHandler enqueues a Pod's org, and remembers Pods that are deleted.
func (c *Controller) podHandler() handler.EventHandler {
	return coalesced(func(e event.DeleteEvent) {
		c.gone.Store(e.Object.GetUID(), c.clock.Now())
		if tok := e.Object.GetLabels()[berthv1alpha1.LabelQuotaToken]; tok != "" {
			c.gone.Store(types.UID(tok), c.clock.Now()) // the UID of its token entry
		}
	})
}

// coalesced enqueues the object's org Coalesce from now; events for the same
// org meanwhile join that one request. onDelete, if set, sees deletions.
func coalesced(onDelete func(event.DeleteEvent)) handler.EventHandler {
	add := func(obj client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		for _, r := range controllers.OrgRequest(context.Background(), obj) {
			q.AddAfter(r, Coalesce)
		}
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(e.Object, q)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(e.ObjectOld, q)
			add(e.ObjectNew, q)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if onDelete != nil {
				onDelete(e)
			}
			add(e.Object, q)
		},
		GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(e.Object, q)
		},
	}
}

// Reconcile cleans one org's ledger and updates its status.
func (c *Controller) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	org := &berthv1alpha1.Organization{}
	if err := c.client.Get(ctx, req.NamespacedName, org); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	entries, holds, err := c.ledger.Read(ctx, org.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	c.forgetOldDeletions()
	var pods corev1.PodList
	if err := c.client.List(ctx, &pods, client.MatchingLabels{berthv1alpha1.LabelOrg: org.Name}); err != nil {
		return ctrl.Result{}, err
	}
	stale, wait, err := c.staleEntries(ctx, entries, byToken(pods.Items))
	if err != nil {
		return ctrl.Result{}, err
	}
	if len(stale) > 0 {
		if err := c.ledger.Release(ctx, org.Name, stale); err != nil {
			return ctrl.Result{}, fmt.Errorf("release ledger entries of org %s: %w", org.Name, err)
		}
		for k := range stale {
			delete(entries, k)
		}
	}
	var jobs batchv1.JobList
	if err := c.client.List(ctx, &jobs, client.MatchingLabels{
		berthv1alpha1.LabelClass: string(berthv1alpha1.ClassBuild), berthv1alpha1.LabelOrg: org.Name,
	}); err != nil {
		return ctrl.Result{}, err
	}
	plan := buildqueue.Plan(org, jobs.Items)
	usage, missing := Live(org, pods.Items, entries, c.clock.Now())
	for k, e := range missing {
		if _, deleted := c.gone.Load(e.UID); deleted { // the cache is behind
			delete(missing, k)
		}
	}
	if len(missing) > 0 {
		wait = max(wait, Grace) // look again once the new entries can be judged
		// Pods admitted before the org had a limit, or under a replica's
		// hold that was never written back: the limit counts them.
		if err := c.ledger.Record(ctx, org.Name, missing); err != nil {
			return ctrl.Result{}, fmt.Errorf("record live Pods in the ledger of org %s: %w", org.Name, err)
		}
	}
	// Only now that their Pods are entries may lost holds go.
	remain := len(holds) > 0
	if cutoff := c.clock.Now().Add(-Grace); quota.Expired(holds, cutoff) {
		if remain, err = c.ledger.DropExpired(ctx, org.Name, cutoff); err != nil {
			return ctrl.Result{}, fmt.Errorf("drop expired holds from the ledger of org %s: %w", org.Name, err)
		}
	}
	if remain && (wait == 0 || wait > Grace) {
		wait = Grace // a replica that stops without returning its hold
	}
	status := org.Status.DeepCopy()
	status.ObservedGeneration = org.Generation
	status.Workspaces = int32(usage.Workspaces)
	status.GPUs = int32(usage.GPUs)
	status.RunningBuilds = int32(plan.Running)
	status.QueuedBuilds = int32(len(plan.Queued))
	if !apierrors.Semantic.DeepEqual(status, &org.Status) {
		patch := client.MergeFrom(org.DeepCopy())
		org.Status = *status
		if err := c.client.Status().Patch(ctx, org, patch); err != nil && !kerrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("update status of org %s: %w", org.Name, err)
		}
	}
	if wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	return ctrl.Result{}, nil
}

// Live counts an org's running workspaces and GPUs from its Pods, and
// returns the ledger entries that limited Pods lack. An entry covers one
// Pod: the one of its name and UID, or the one carrying its quota token.
func Live(org *berthv1alpha1.Organization, pods []corev1.Pod, entries map[string]quota.Entry, now time.Time) (quota.Usage, map[string]quota.Entry) {
	var u quota.Usage
	missing := map[string]quota.Entry{}
	covered := map[string]bool{}
	for i := range pods {
		p := &pods[i]
		class, ok := berthv1alpha1.ParseClass(p.Labels[berthv1alpha1.LabelClass])
		if !ok || controllers.PodFinished(p) {
			continue
		}
		gpus := webhooks.PodGPUs(&p.Spec)
		if class == berthv1alpha1.ClassWorkspace {
			u.Workspaces++
		}
		u.GPUs += gpus
		if class == berthv1alpha1.ClassBuild || !quota.Limited(org, class, gpus) || p.DeletionTimestamp != nil {
			continue
		}
		if now.Sub(p.CreationTimestamp.Time) < quota.DefaultHoldTTL {
			continue // may be under a replica's hold, written back within its TTL
		}
		if tok := p.Labels[berthv1alpha1.LabelQuotaToken]; tok != "" {
			if k := quota.TokenKey(p.Namespace, tok); !covered[k] {
				if _, ok := entries[k]; ok {
					covered[k] = true
					continue
				}
			}
		}
		key := quota.Key(p.Namespace, p.Name)
		if e, ok := entries[key]; !ok || e.UID != p.UID {
			missing[key] = quota.Entry{UID: p.UID, Class: class, GPUs: gpus, Admitted: now}
		}
	}
	return u, missing
}

// byToken indexes the Pods that carry a quota token by its ledger key.
func byToken(pods []corev1.Pod) map[string]*corev1.Pod {
	m := map[string]*corev1.Pod{}
	for i := range pods {
		if tok := pods[i].Labels[berthv1alpha1.LabelQuotaToken]; tok != "" {
			m[quota.TokenKey(pods[i].Namespace, tok)] = &pods[i]
		}
	}
	return m
}

// forgetOldDeletions drops deletions of Pods no ledger held.
func (c *Controller) forgetOldDeletions() {
	now := c.clock.Now()
	c.gone.Range(func(k, v any) bool {
		if now.Sub(v.(time.Time)) > 5*time.Minute {
			c.gone.Delete(k)
		}
		return true
	})
}

// staleEntries returns the entries whose Pod finished or is gone, and how
// long to wait before looking again at entries too young to judge. tokens
// are the org's cached Pods that carry a quota token, by ledger key.
func (c *Controller) staleEntries(ctx context.Context, entries map[string]quota.Entry, tokens map[string]*corev1.Pod) (map[string]types.UID, time.Duration, error) {
	stale := map[string]types.UID{}
	var wait time.Duration
	now := c.clock.Now()
	for key, e := range entries {
		token, isToken := e.Token()
		var pod *corev1.Pod
		if isToken {
			pod = tokens[key]
		} else {
			p := &corev1.Pod{}
			err := c.client.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: e.Name}, p)
			if err != nil && !kerrors.IsNotFound(err) {
				return nil, 0, err
			}
			if err == nil && p.UID == e.UID {
				pod = p
			}
		}
		if pod != nil {
			if controllers.PodFinished(pod) {
				stale[key] = e.UID
			}
			continue
		}
		if _, deleted := c.gone.Load(e.UID); deleted {
			stale[key] = e.UID
			continue
		}
		// Not in the cache, or another Pod of that name: ask the API server,
		// after the grace period a fresh Pod may need to show up.
		if age := now.Sub(e.Admitted); age < Grace {
			wait = max(wait, Grace-age)
			continue
		}
		live, err := c.liveOnServer(ctx, e, token, isToken)
		if err != nil {
			return nil, 0, err
		}
		if !live {
			stale[key] = e.UID
		}
	}
	return stale, wait, nil
}

// liveOnServer asks the API server whether the Pod of entry e exists and has
// not finished.
func (c *Controller) liveOnServer(ctx context.Context, e quota.Entry, token string, isToken bool) (bool, error) {
	if isToken {
		var pods corev1.PodList
		if err := c.reader.List(ctx, &pods, client.InNamespace(e.Namespace), client.MatchingLabels{berthv1alpha1.LabelQuotaToken: token}); err != nil {
			return false, err
		}
		return slices.ContainsFunc(pods.Items, func(p corev1.Pod) bool { return !controllers.PodFinished(&p) }), nil
	}
	pod := &corev1.Pod{}
	err := c.reader.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: e.Name}, pod)
	switch {
	case kerrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, err
	}
	return pod.UID == e.UID && !controllers.PodFinished(pod), nil
}
