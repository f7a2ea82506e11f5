// Package workspaces looks after workspaces once berth has admitted them.
// A Workspace outlives its Pod: it keeps the Pod's template and claims.
// berth stops a workspace after its org's idleTimeout without activity,
// starts it again when spec.started is set, brings it back on another node
// when its node is lost, and takes a user's delete of its Pod for a stop.
// A labelled workspace Pod created on its own is adopted into a Workspace.
//
// Every step reads its state from the API (the Workspace and its Pods), so
// a restart at any point converges: a start creates a Pod whose name is
// fixed before the create (the Workspace's generation, or the name its Lost
// status recorded), every start, stop or judgement of a gone Pod is made
// on the Workspace as the API server has it, not as the cache last saw it,
// and a going Pod is accounted for before anything else happens.
package workspaces

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/controllers"
)

// Name is the controller's name.
const Name = "workspaces"

const (
	// indexWorkspace indexes Pods by the Workspace they belong to: the one
	// that controls them, or, for a labelled workspace Pod nothing
	// controls, the one it would be adopted into.
	indexWorkspace = "berth.workspace"
	// indexNode indexes workspace Pods by their node.
	indexNode = "berth.workspace.node"

	// workers reconcile different workspaces at once: a burst of wakes
	// (a team's morning) is a status write and a Pod create each, and
	// waiting on the API server one at a time would queue them.
	workers = 64

	// quietStart is how long a start may take before its status says
	// what it waits for: a burst of wakes writes no more than it must.
	quietStart = 3 * time.Second
	// runningSettle is how long the status of a Pod seen running may wait
	// while other starts are in flight. A burst of wakes is a Pod create
	// and a status write each, and on a busy API server the writes slow
	// the creates still to come: the writes wait, the creates go first.
	// A lone start is recorded at once. The wake API answers from the
	// Pod, so no caller waits for the status.
	runningSettle = time.Second
	// inFlight is how long after its create a start counts as in flight
	// for runningSettle, at most.
	inFlight = 10 * time.Second

	// activityResolution is how far the recorded last activity may lag:
	// heartbeats closer together than this write no status.
	activityResolution = time.Minute
	// retryLost is how long a lost workspace whose new Pod was refused
	// waits before berth tries again.
	retryLost = 15 * time.Second
	// retryClaims is how soon berth looks again for a claim the API
	// server has not made yet (a generic ephemeral volume's).
	retryClaims = 2 * time.Second

	// metricsGrace is how long past its idle deadline a workspace waits
	// for metrics.k8s.io to have a sample of its Pod, asking every
	// metricsRetry; metrics-server needs two scrapes (15 s to a minute
	// apart) after a Pod starts.
	metricsGrace = time.Minute
	metricsRetry = 15 * time.Second

	conditionReady       = "Ready"
	conditionStartFailed = "StartFailed"
	conditionClaimsKept  = "ClaimsKept"
)

// Options tune the controller.
type Options struct {
	// Metrics reads PodMetrics from metrics.k8s.io; nil turns the CPU
	// check off.
	Metrics client.Reader
	// BusyCPU is the CPU use at or above which a workspace past its idle
	// timeout counts as active though no heartbeat came (a long build in
	// its terminal); zero turns the check off.
	BusyCPU resource.Quantity
	// Audit records idle and user stops, losses, wakes and recoveries for
	// the org's audit log; nil records none.
	Audit *controllers.Auditor
}

// Controller keeps Workspaces and their Pods in step.
type Controller struct {
	client   client.Client // cached reads, writes
	reader   client.Reader // exact reads, from the API server
	recorder events.EventRecorder
	clock    clock.Clock
	opts     Options
	// gone holds the last state of the workspace Pods seen deleted, so
	// that a Pod that went before berth read it is judged by how it went.
	gone sync.Map // types.UID -> goneRecord
	// starting holds when berth created each Pod whose status does not
	// record it Running yet, for inFlight; ran holds when such a Pod was
	// first seen Running (see runningSettle).
	starting sync.Map // types.UID -> time.Time
	ran      sync.Map // types.UID -> time.Time
}

type goneRecord struct {
	loss string // LossReason, "" for a stop
	at   time.Time
}

// NewController returns a Controller.
func NewController(c client.Client, reader client.Reader, recorder events.EventRecorder, clk clock.Clock, opts Options) *Controller {
	return &Controller{client: c, reader: reader, recorder: recorder, clock: clk, opts: opts}
}

// Register adds the controller and its Pod indexes to the manager.
func (c *Controller) Register(mgr ctrl.Manager) error {
	ctx := context.Background()
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &corev1.Pod{}, indexWorkspace, podWorkspace); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &corev1.Pod{}, indexNode, podNode); err != nil {
		return err
	}
	workspacePods := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return workspaceOf(o.(*corev1.Pod)) != ""
	})
	return ctrl.NewControllerManagedBy(mgr).Named(Name).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		For(&berthv1alpha1.Workspace{}).
		Watches(&corev1.Pod{}, c.podHandler(), builder.WithPredicates(workspacePods)).
		Watches(&corev1.Node{}, c.nodeHandler(), builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(event.CreateEvent) bool { return false },
			UpdateFunc: func(event.UpdateEvent) bool { return false },
		})).
		// A changed idleTimeout moves every deadline of the org.
		Watches(&berthv1alpha1.Organization{}, handler.EnqueueRequestsFromMapFunc(c.orgWorkspaces),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(c)
}

// podWorkspace is the indexWorkspace of a Pod.
func podWorkspace(o client.Object) []string {
	if ws := workspaceOf(o.(*corev1.Pod)); ws != "" {
		return []string{ws}
	}
	return nil
}

// podNode is the indexNode of a Pod.
func podNode(o client.Object) []string {
	pod := o.(*corev1.Pod)
	if workspaceOf(pod) == "" || pod.Spec.NodeName == "" {
		return nil
	}
	return []string{pod.Spec.NodeName}
}

// orgWorkspaces maps an Organization to its Workspaces.
func (c *Controller) orgWorkspaces(ctx context.Context, org client.Object) []reconcile.Request {
	namespaces, err := controllers.OrgNamespaces(ctx, c.client, org.GetName())
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list the namespaces of an Organization", "org", org.GetName())
		return nil
	}
	var out []reconcile.Request
	for _, ns := range namespaces {
		var list berthv1alpha1.WorkspaceList
		if err := c.client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "list the Workspaces of a namespace", "namespace", ns)
			continue
		}
		for _, ws := range list.Items {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&ws)})
		}
	}
	return out
}

// workspaceOf is the Workspace a Pod belongs to, or "".
func workspaceOf(pod *corev1.Pod) string {
	if ws := owner(pod); ws != "" {
		return ws
	}
	if metav1.GetControllerOf(pod) == nil && pod.Labels[berthv1alpha1.LabelClass] == string(berthv1alpha1.ClassWorkspace) {
		return WorkspaceName(pod)
	}
	return ""
}

func (c *Controller) podHandler() handler.EventHandler {
	enqueue := func(obj client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: workspaceOf(obj.(*corev1.Pod))}})
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.Object, q)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.ObjectNew, q)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			pod := e.Object.(*corev1.Pod)
			c.gone.Store(pod.UID, goneRecord{loss: LossReason(pod, false), at: c.clock.Now()})
			enqueue(pod, q)
		},
	}
}

// nodeHandler wakes the workspaces whose node was deleted.
func (c *Controller) nodeHandler() handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, node client.Object) []reconcile.Request {
		var pods corev1.PodList
		if err := c.client.List(ctx, &pods, client.MatchingFields{indexNode: node.GetName()}); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "list workspace Pods of a deleted node", "node", node.GetName())
			return nil
		}
		var out []reconcile.Request
		for i := range pods.Items {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{
				Namespace: pods.Items[i].Namespace, Name: workspaceOf(&pods.Items[i]),
			}})
		}
		return out
	})
}

// Reconcile brings one workspace's Pods in line with its spec.
func (c *Controller) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	c.forgetOld()
	var list corev1.PodList
	if err := c.client.List(ctx, &list, client.InNamespace(req.Namespace), client.MatchingFields{indexWorkspace: req.Name}); err != nil {
		return ctrl.Result{}, err
	}
	ws := &berthv1alpha1.Workspace{}
	err := c.client.Get(ctx, req.NamespacedName, ws)
	if apierrors.IsNotFound(err) {
		return ctrl.Result{}, c.adoptNew(ctx, req, list.Items)
	}
	if err != nil || ws.DeletionTimestamp != nil {
		// The garbage collector deletes a deleted Workspace's Pods.
		return ctrl.Result{}, err
	}
	org, err := c.org(ctx, ws.Namespace)
	if err != nil {
		return ctrl.Result{}, err
	}
	if org == nil {
		return ctrl.Result{}, c.writeStatus(ctx, ws, func(s *berthv1alpha1.WorkspaceStatus) {
			s.Message = fmt.Sprintf("namespace %s belongs to no Organization (label %s); ask the platform team to add it to one", ws.Namespace, berthv1alpha1.LabelOrg)
		})
	}
	r := &run{Controller: c, ws: ws, org: org, now: c.clock.Now()}
	result, err := r.reconcile(ctx, list.Items)
	if errors.Is(err, errStale) {
		// Decide again on the Workspace as the API server has it.
		if err := c.reader.Get(ctx, req.NamespacedName, ws); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		r.fresh = true
		result, err = r.reconcile(ctx, list.Items)
	}
	return result, err
}

// errStale asks for a Workspace read from the API server.
var errStale = errors.New("the cached Workspace may be stale")

// run is one reconcile of one workspace.
type run struct {
	*Controller
	ws  *berthv1alpha1.Workspace
	org *berthv1alpha1.Organization
	now time.Time
	// fresh is set when ws was read from the API server, not the cache.
	// Starting, stopping or judging a Pod gone takes a fresh one: a cache
	// that has seen a new Pod but not the status that names it, or a stop
	// but not the wake after it, would act on a past state.
	fresh bool
}

// needFresh returns errStale unless the Workspace is fresh.
func (r *run) needFresh() error {
	if r.fresh {
		return nil
	}
	return errStale
}

func (r *run) reconcile(ctx context.Context, all []corev1.Pod) (ctrl.Result, error) {
	ws := r.ws
	var cur *corev1.Pod
	var live, going, strays []*corev1.Pod
	for i := range all {
		pod := &all[i]
		if !OwnedBy(pod, ws) {
			if metav1.GetControllerOf(pod) == nil && !podGoing(pod) {
				strays = append(strays, pod)
			}
			continue
		}
		nodeGone, err := r.nodeGone(ctx, pod)
		if err != nil {
			return ctrl.Result{}, err
		}
		if pod.Name == ws.Status.PodName || (cur == nil && pod.Name == startName(ws)) {
			cur = pod
		}
		if podGoing(pod) || nodeGone {
			going = append(going, pod)
			if err := r.clean(ctx, pod, nodeGone); err != nil {
				return ctrl.Result{}, err
			}
			continue
		}
		live = append(live, pod)
	}
	// A wake of a stopped workspace names no Pod yet: its create meets a
	// Pod the cache has not seen as AlreadyExists, so it skips the look.
	cleanWake := ws.Spec.Started && ws.Status.PodName == "" && ws.Status.PodUID == ""
	if cur == nil && r.fresh && !cleanWake {
		// The cache may not have a Pod berth has just created.
		for _, name := range []string{ws.Status.PodName, startName(ws)} {
			if name == "" || cur != nil {
				continue
			}
			pod := &corev1.Pod{}
			err := r.reader.Get(ctx, client.ObjectKey{Namespace: ws.Namespace, Name: name}, pod)
			if err != nil && !apierrors.IsNotFound(err) {
				return ctrl.Result{}, err
			}
			if err == nil && OwnedBy(pod, ws) {
				cur = pod
				if !podGoing(pod) && !slices.ContainsFunc(live, func(p *corev1.Pod) bool { return p.UID == pod.UID }) {
					live = append(live, pod)
				}
			}
		}
	}

	if cur == nil && ws.Status.PodName == "" && len(live) == 1 {
		// The status names no Pod, yet one runs: adopted, or started, just
		// before its status was written. It is the current one.
		if err := r.needFresh(); err != nil {
			return ctrl.Result{}, err
		}
		cur = live[0]
	}

	// A Pod berth saw run has gone, or is going, without berth stopping
	// it: a loss or a user's stop. Account for it first.
	if ws.Spec.Started && ws.Status.PodUID != "" && (ws.Status.Phase == berthv1alpha1.WorkspaceRunning || ws.Status.Phase == berthv1alpha1.WorkspaceStarting) &&
		(cur == nil || cur.UID != ws.Status.PodUID || !slices.Contains(live, cur)) {
		if err := r.needFresh(); err != nil {
			return ctrl.Result{}, err
		}
		return r.accountGone(ctx, cur)
	}

	// Duplicates (a crash between two starts) go; the current one stays.
	for _, pod := range live {
		if pod != cur && pod.Name != ws.Status.PodName && pod.Name != startName(ws) {
			if err := r.needFresh(); err != nil {
				return ctrl.Result{}, err
			}
			if err := r.deletePod(ctx, pod, nil); err != nil {
				return ctrl.Result{}, err
			}
		}
	}
	if cur != nil && !slices.Contains(live, cur) {
		cur = nil
	}

	switch {
	case ws.Spec.Started && cur != nil:
		return r.running(ctx, cur)
	case len(strays) > 0 && len(live) == 0:
		// A labelled Pod made for this Workspace by hand: it is a start.
		if err := r.needFresh(); err != nil {
			return ctrl.Result{}, err
		}
		if !ws.Spec.Started {
			if err := r.setStarted(ctx, true, ""); err != nil {
				return ctrl.Result{}, err
			}
		}
		return ctrl.Result{}, r.adopt(ctx, strays[0])
	case ws.Spec.Started:
		// A clean wake needs no fresh read. Its Pod is named by the
		// generation, so a create from a stale cache either meets that Pod
		// (AlreadyExists) or makes one that the next pass, on the newer
		// state, deletes as a duplicate or stops: what a stop landing just
		// after a fresh read would bring anyway. A recovery, whose Lost
		// status names the Pod to create, reads it fresh.
		if !cleanWake {
			if err := r.needFresh(); err != nil {
				return ctrl.Result{}, err
			}
		}
		return r.start(ctx)
	default:
		if len(live) > 0 {
			if err := r.needFresh(); err != nil {
				return ctrl.Result{}, err
			}
		}
		return ctrl.Result{}, r.stop(ctx, live, len(going) > 0)
	}
}

// podGoing reports whether a Pod is being deleted or has finished.
func podGoing(pod *corev1.Pod) bool {
	return pod.DeletionTimestamp != nil || controllers.PodFinished(pod)
}

// nodeGone reports whether a Pod is bound to a node that no longer exists.
// The cache may lag behind a new node, so a miss is checked on the API
// server.
func (c *Controller) nodeGone(ctx context.Context, pod *corev1.Pod) (bool, error) {
	if pod.Spec.NodeName == "" {
		return false, nil
	}
	key := client.ObjectKey{Name: pod.Spec.NodeName}
	err := c.client.Get(ctx, key, &corev1.Node{})
	if apierrors.IsNotFound(err) {
		err = c.reader.Get(ctx, key, &corev1.Node{})
	}
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	return false, err
}

// clean deletes what is left of a going Pod: a finished Pod's object, and
// at once a Pod whose node is gone, which no kubelet will ever confirm.
func (r *run) clean(ctx context.Context, pod *corev1.Pod, nodeGone bool) error {
	switch {
	case nodeGone && (pod.DeletionTimestamp == nil || ptr.Deref(pod.DeletionGracePeriodSeconds, 1) > 0):
		return r.deletePod(ctx, pod, ptr.To[int64](0))
	case pod.DeletionTimestamp == nil:
		return r.deletePod(ctx, pod, nil)
	}
	return nil
}

func (c *Controller) deletePod(ctx context.Context, pod *corev1.Pod, grace *int64) error {
	opts := []client.DeleteOption{client.Preconditions{UID: &pod.UID}}
	if grace != nil {
		opts = append(opts, client.GracePeriodSeconds(*grace))
	}
	if err := c.client.Delete(ctx, pod, opts...); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete Pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// accountGone decides whether the current Pod, which berth did not stop,
// was lost with its node (the workspace comes back) or stopped by a user
// (it stays stopped, claims kept). pod is its last known state, nil when
// it is gone from the API server too.
func (r *run) accountGone(ctx context.Context, pod *corev1.Pod) (ctrl.Result, error) {
	ws := r.ws
	loss := ""
	switch {
	case pod != nil && pod.UID == ws.Status.PodUID:
		nodeGone, err := r.nodeGone(ctx, pod)
		if err != nil {
			return ctrl.Result{}, err
		}
		loss = LossReason(pod, nodeGone)
	default:
		if g, ok := r.gone.Load(ws.Status.PodUID); ok {
			loss = g.(goneRecord).loss
		}
		if loss == "" && ws.Status.NodeName != "" {
			// Unseen, or seen without a disruption: if its node is gone too,
			// it went with the node.
			nodeGone, err := r.nodeGone(ctx, &corev1.Pod{Spec: corev1.PodSpec{NodeName: ws.Status.NodeName}})
			if err != nil {
				return ctrl.Result{}, err
			}
			if nodeGone {
				loss = fmt.Sprintf("node %s is gone", ws.Status.NodeName)
			}
		}
	}
	if loss == "" {
		r.recorder.Eventf(ws, nil, corev1.EventTypeNormal, "Stopped", "Stop",
			"Pod %s was deleted, which stops the workspace; its claims are kept. Set spec.started=true to start it again", ws.Status.PodName)
		r.opts.Audit.Record(r.org, ws, corev1.EventTypeNormal, berthv1alpha1.AuditWorkspaceStopped, "Stop",
			"workspace %s/%s stopped by its user: Pod %s was deleted", ws.Namespace, ws.Name, ws.Status.PodName)
		stops.WithLabelValues(string(berthv1alpha1.StoppedUser)).Inc()
		return ctrl.Result{}, r.setStarted(ctx, false, berthv1alpha1.StoppedUser)
	}
	r.recorder.Eventf(ws, nil, corev1.EventTypeWarning, "Lost", "Recover",
		"Pod %s was lost (%s); berth starts the workspace again on another node with the same claims", ws.Status.PodName, loss)
	r.opts.Audit.Record(r.org, ws, corev1.EventTypeWarning, berthv1alpha1.AuditWorkspaceLost, "Recover",
		"workspace %s/%s lost Pod %s on node %s (%s)", ws.Namespace, ws.Name, ws.Status.PodName, ws.Status.NodeName, loss)
	stops.WithLabelValues(string(berthv1alpha1.StoppedSpotLoss)).Inc()
	err := r.writeStatus(ctx, ws, func(s *berthv1alpha1.WorkspaceStatus) {
		s.Phase = berthv1alpha1.WorkspaceLost
		s.StoppedBy = berthv1alpha1.StoppedSpotLoss
		s.StoppedAt = &metav1.Time{Time: r.now}
		// The replacement gets a name of its own: the lost Pod may take a
		// while to go.
		s.PodName, s.PodUID, s.NodeName = podName(ws.Name), "", ""
		s.Message = fmt.Sprintf("lost: %s; starting again", loss)
		setCondition(s, conditionReady, metav1.ConditionFalse, "Lost", s.Message)
	})
	return ctrl.Result{}, err // the status update brings the next pass, which starts it
}

// setStarted writes spec.started, and, when it stops the workspace, why.
func (r *run) setStarted(ctx context.Context, started bool, why berthv1alpha1.StopReason) error {
	ws := r.ws
	patch := client.MergeFromWithOptions(ws.DeepCopy(), client.MergeFromWithOptimisticLock{})
	ws.Spec.Started = started
	if started {
		delete(ws.Annotations, berthv1alpha1.AnnotationStopReason)
	} else {
		if ws.Annotations == nil {
			ws.Annotations = map[string]string{}
		}
		ws.Annotations[berthv1alpha1.AnnotationStopReason] = string(why)
	}
	if err := r.client.Patch(ctx, ws, patch); err != nil {
		return fmt.Errorf("set spec.started=%t on Workspace %s/%s: %w", started, ws.Namespace, ws.Name, err)
	}
	return nil
}

// running records the current Pod's state and stops the workspace once
// it has been idle for the org's idleTimeout.
func (r *run) running(ctx context.Context, pod *corev1.Pod) (ctrl.Result, error) {
	ws := r.ws
	last, badHeartbeat := Activity(ws, pod, r.now)
	if badHeartbeat != nil {
		r.recorder.Eventf(ws, pod, corev1.EventTypeWarning, "BadHeartbeat", "Heartbeat", "%s", badHeartbeat.Error())
	}
	result := ctrl.Result{}
	pending, err := r.keepClaims(ctx, pod)
	if err != nil {
		return result, err
	}
	if pending {
		result.RequeueAfter = retryClaims
	}
	runningNow := pod.Status.Phase == corev1.PodRunning
	if since := r.now.Sub(pod.CreationTimestamp.Time); !runningNow && since < quietStart {
		// Most starts run within a second: say what they wait for only
		// if they take longer.
		return minResult(result, quietStart-since), nil
	}
	recorded := ws.Status.Phase == berthv1alpha1.WorkspaceRunning && ws.Status.PodUID == pod.UID
	if runningNow && !recorded {
		first, seen := r.ran.LoadOrStore(pod.UID, r.now)
		if !seen {
			startSeconds.Observe(r.now.Sub(pod.CreationTimestamp.Time).Seconds())
		}
		if since := r.now.Sub(first.(time.Time)); since < runningSettle && r.othersStarting(pod.UID) {
			return minResult(result, runningSettle-since), nil
		}
	}
	err = r.writeStatus(ctx, ws, func(s *berthv1alpha1.WorkspaceStatus) {
		if s.PodUID != pod.UID {
			s.StartedAt = &metav1.Time{Time: pod.CreationTimestamp.Time}
		}
		s.PodName, s.PodUID, s.NodeName = pod.Name, pod.UID, pod.Spec.NodeName
		s.Claims = Claims(&ws.Spec.Template)
		if s.LastActivity == nil || last.Sub(s.LastActivity.Time) >= activityResolution || last.Before(s.LastActivity.Time) {
			s.LastActivity = &metav1.Time{Time: last}
		}
		if !pending {
			setCondition(s, conditionClaimsKept, metav1.ConditionTrue, "Kept", "the claims are owned by the Workspace and outlive its Pods")
		}
		if runningNow {
			s.Phase, s.StoppedBy, s.Message = berthv1alpha1.WorkspaceRunning, "", ""
			setCondition(s, conditionReady, metav1.ConditionTrue, "Running", "the workspace's Pod runs")
			meta.RemoveStatusCondition(&s.Conditions, conditionStartFailed)
			return
		}
		s.Phase = berthv1alpha1.WorkspaceStarting
		s.Message = waitingFor(pod)
		setCondition(s, conditionReady, metav1.ConditionFalse, "Starting", s.Message)
	})
	if err != nil || !runningNow {
		return result, err
	}
	r.ran.Delete(pod.UID)
	r.starting.Delete(pod.UID)
	timeout := r.org.Spec.IdleTimeoutOrDefault()
	if timeout <= 0 {
		return result, nil
	}
	idle := r.now.Sub(last)
	if idle < timeout {
		return minResult(result, timeout-idle+time.Second), nil
	}
	switch r.busy(ctx, pod) {
	case cpuBusy:
		// CPU use is activity: a long build in a terminal sends no
		// heartbeat. Look again a timeout from now.
		keptBusy.Inc()
		err := r.writeStatus(ctx, ws, func(s *berthv1alpha1.WorkspaceStatus) { s.LastActivity = &metav1.Time{Time: r.now} })
		return minResult(result, timeout+time.Second), err
	case cpuUnknown:
		if idle < timeout+metricsGrace {
			// metrics-server has no sample for this Pod yet (it needs two
			// scrapes): look again before deciding.
			return minResult(result, metricsRetry), nil
		}
	}
	r.recorder.Eventf(ws, pod, corev1.EventTypeNormal, "Idle", "Stop",
		"no activity for %s (Organization %s's idleTimeout is %s): stopped; its claims are kept. Set spec.started=true to start it again",
		idle.Truncate(time.Second), r.org.Name, timeout)
	r.opts.Audit.Record(r.org, ws, corev1.EventTypeNormal, berthv1alpha1.AuditWorkspaceStopped, "Stop",
		"workspace %s/%s stopped for idleness: no activity for %s (idleTimeout %s)", ws.Namespace, ws.Name, idle.Truncate(time.Second), timeout)
	stops.WithLabelValues(string(berthv1alpha1.StoppedIdle)).Inc()
	return result, r.setStarted(ctx, false, berthv1alpha1.StoppedIdle)
}

// othersStarting reports whether starts other than the Pod uid's are in
// flight.
func (c *Controller) othersStarting(uid types.UID) bool {
	others := false
	c.starting.Range(func(k, _ any) bool {
		others = k.(types.UID) != uid
		return !others
	})
	return others
}

// cpuUse is what metrics.k8s.io says of a Pod's CPU use.
type cpuUse int

const (
	cpuIdle    cpuUse = iota // below Options.BusyCPU, or no metrics at all
	cpuBusy                  // at or above Options.BusyCPU
	cpuUnknown               // metrics.k8s.io has no answer for this Pod now
)

// busy asks metrics.k8s.io whether the Pod uses at least Options.BusyCPU.
// Where metrics.k8s.io is not served at all, it is idle: the heartbeat
// alone decides. Where it is served but has no answer now, it is unknown,
// and the caller asks again for a while.
func (c *Controller) busy(ctx context.Context, pod *corev1.Pod) cpuUse {
	if c.opts.Metrics == nil || c.opts.BusyCPU.IsZero() {
		return cpuIdle
	}
	m := &metricsv1beta1.PodMetrics{}
	if err := c.opts.Metrics.Get(ctx, client.ObjectKeyFromObject(pod), m); err != nil {
		ctrl.LoggerFrom(ctx).V(1).Info("no CPU use from metrics.k8s.io", "pod", client.ObjectKeyFromObject(pod), "error", err.Error())
		var discoveryFailed *discovery.ErrGroupDiscoveryFailed
		if !errors.As(err, &discoveryFailed) && meta.IsNoMatchError(err) {
			return cpuIdle // the cluster serves no metrics.k8s.io
		}
		// No sample for this Pod yet, or metrics-server is briefly away.
		return cpuUnknown
	}
	var used resource.Quantity
	for _, ct := range m.Containers {
		used.Add(ct.Usage[corev1.ResourceCPU])
	}
	if used.Cmp(c.opts.BusyCPU) >= 0 {
		return cpuBusy
	}
	return cpuIdle
}

// waitingFor says what a started Pod that does not run yet waits for.
func waitingFor(pod *corev1.Pod) string {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return "waiting for a node: " + c.Message
		}
	}
	if pod.Spec.NodeName == "" {
		return "waiting to be scheduled"
	}
	return "waiting for the Pod to start on node " + pod.Spec.NodeName
}

func minResult(r ctrl.Result, after time.Duration) ctrl.Result {
	if r.RequeueAfter == 0 || after < r.RequeueAfter {
		r.RequeueAfter = after
	}
	return r
}

// start creates the workspace's Pod, from a Workspace read from the API
// server. Its name is fixed before the create (the generation's, or the
// one the Lost status recorded), so a restart creates the same Pod, and
// no second one.
func (r *run) start(ctx context.Context) (ctrl.Result, error) {
	ws := r.ws
	trigger := "wake"
	if ws.Status.StoppedBy == berthv1alpha1.StoppedSpotLoss {
		trigger = "recover"
	}
	if ws.Annotations[berthv1alpha1.AnnotationStopReason] != "" {
		// The last stop's reason is spent: a wake came before the stop
		// removed it.
		if err := r.setStarted(ctx, true, ""); err != nil {
			return ctrl.Result{}, err
		}
	}
	// A recovery starts the Pod its Lost status named; a wake the Pod its
	// generation names, so a restart creates the same one, and a wake,
	// which changes the generation, never meets the last Pod's name.
	name := ws.Status.PodName
	if name == "" || ws.Status.PodUID != "" {
		name = startName(ws)
	}
	pod := PodFor(ws, name)
	err := r.client.Create(ctx, pod)
	if err == nil || apierrors.IsAlreadyExists(err) {
		if err == nil {
			r.starting.Store(pod.UID, r.now)
			starts.WithLabelValues(trigger).Inc()
			reason := berthv1alpha1.AuditWorkspaceWoken
			if trigger == "recover" {
				reason = berthv1alpha1.AuditWorkspaceRecovered
			}
			r.opts.Audit.Record(r.org, ws, corev1.EventTypeNormal, reason, "Start",
				"workspace %s/%s started: Pod %s created (%s)", ws.Namespace, ws.Name, name, trigger)
		}
		return ctrl.Result{}, nil
	}
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) {
		return ctrl.Result{}, fmt.Errorf("create Pod %s/%s of Workspace %s: %w", ws.Namespace, name, ws.Name, err)
	}
	// Admission refused the Pod: a quota, or a template berth does not admit.
	startFailures.WithLabelValues(trigger).Inc()
	msg := fmt.Sprintf("Pod %s was refused: %v", name, apiMessage(err))
	r.recorder.Eventf(ws, nil, corev1.EventTypeWarning, "StartFailed", "Start", "%s", msg)
	werr := r.writeStatus(ctx, ws, func(s *berthv1alpha1.WorkspaceStatus) {
		s.PodName, s.PodUID, s.NodeName = "", "", ""
		s.Message = msg
		setCondition(s, conditionStartFailed, metav1.ConditionTrue, "Refused", msg)
		setCondition(s, conditionReady, metav1.ConditionFalse, "StartFailed", msg)
		if trigger == "recover" {
			s.Phase = berthv1alpha1.WorkspaceLost
			return
		}
		s.Phase = berthv1alpha1.WorkspaceStopped
	})
	if werr != nil {
		return ctrl.Result{}, werr
	}
	if trigger == "recover" {
		// A lost workspace keeps trying: its user did not ask it to stop.
		return ctrl.Result{RequeueAfter: retryLost}, nil
	}
	// A refused wake is over: the workspace stays stopped until woken again.
	return ctrl.Result{}, r.setStarted(ctx, false, berthv1alpha1.StoppedUser)
}

// startName is the name of the Pod a wake of ws at its current
// generation creates: {workspace}-{generation}-{uid prefix}.
func startName(ws *berthv1alpha1.Workspace) string {
	suffix := fmt.Sprintf("-%d-%s", ws.Generation, string(ws.UID)[:min(5, len(ws.UID))])
	name := ws.Name
	if len(name)+len(suffix) > 63 {
		name = name[:63-len(suffix)]
	}
	return name + suffix
}

func podName(ws string) string {
	const suffix = 5
	if len(ws) > 63-suffix-1 {
		ws = ws[:63-suffix-1]
	}
	return ws + "-" + utilrand.String(suffix)
}

// apiMessage is an API error's message without the Go error's wrapping.
func apiMessage(err error) string {
	var s apierrors.APIStatus
	if errors.As(err, &s) {
		return s.Status().Message
	}
	return err.Error()
}

// stop deletes the workspace's live Pods, gracefully, and records the stop.
func (r *run) stop(ctx context.Context, live []*corev1.Pod, going bool) error {
	ws := r.ws
	for _, pod := range live {
		if err := r.deletePod(ctx, pod, nil); err != nil {
			return err
		}
	}
	why := berthv1alpha1.StoppedUser
	if berthv1alpha1.StopReason(ws.Annotations[berthv1alpha1.AnnotationStopReason]) == berthv1alpha1.StoppedIdle {
		why = berthv1alpha1.StoppedIdle
	}
	err := r.writeStatus(ctx, ws, func(s *berthv1alpha1.WorkspaceStatus) {
		if s.Phase != berthv1alpha1.WorkspaceStopping && s.Phase != berthv1alpha1.WorkspaceStopped {
			s.StoppedAt = &metav1.Time{Time: r.now}
			s.StoppedBy = why
		}
		s.Phase = berthv1alpha1.WorkspaceStopped
		if len(live) > 0 || going {
			s.Phase = berthv1alpha1.WorkspaceStopping
		}
		s.PodName, s.PodUID, s.NodeName = "", "", ""
		if !meta.IsStatusConditionTrue(s.Conditions, conditionStartFailed) {
			s.Message = ""
		}
		setCondition(s, conditionReady, metav1.ConditionFalse, "Stopped", fmt.Sprintf("stopped (%s); set spec.started=true to start it", s.StoppedBy))
	})
	if err != nil || ws.Annotations[berthv1alpha1.AnnotationStopReason] == "" {
		return err
	}
	// The status holds the stop's reason now. Spending it here, and not
	// on the next wake, keeps that write off the wake's path: a wake by a
	// patch of spec.started finds nothing to clear.
	// A conflict means a newer Workspace than the cache's (often this
	// removal itself), whose event brings another pass.
	patch := client.MergeFromWithOptions(ws.DeepCopy(), client.MergeFromWithOptimisticLock{})
	delete(ws.Annotations, berthv1alpha1.AnnotationStopReason)
	if err := r.client.Patch(ctx, ws, patch); err != nil && !apierrors.IsConflict(err) {
		return fmt.Errorf("remove the stop's reason from Workspace %s/%s: %w", ws.Namespace, ws.Name, err)
	}
	return nil
}

// keepClaims makes the Workspace an owner of the claims its Pod mounts,
// beside the Pod, so that the garbage collector keeps them when the Pod
// goes: it deletes a dependent only once all its owners are gone, and
// drops the deleted Pod from the claim's owners. The Pod stays the
// controller of a generic ephemeral volume's claim, as the scheduler and
// the kubelet require of it (a claim not controlled by its Pod is never
// mounted). It reports pending while such a claim does not exist yet.
func (r *run) keepClaims(ctx context.Context, pod *corev1.Pod) (bool, error) {
	ws := r.ws
	if meta.IsStatusConditionTrue(ws.Status.Conditions, conditionClaimsKept) && ws.Status.PodUID == pod.UID {
		return false, nil
	}
	pending := false
	for _, v := range pod.Spec.Volumes {
		name := ""
		switch {
		case v.PersistentVolumeClaim != nil:
			name = v.PersistentVolumeClaim.ClaimName
		case v.Ephemeral != nil:
			name = pod.Name + "-" + v.Name
		default:
			continue
		}
		pvc := &corev1.PersistentVolumeClaim{}
		err := r.reader.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: name}, pvc)
		if apierrors.IsNotFound(err) {
			pending = pending || v.Ephemeral != nil
			continue
		}
		if err != nil {
			return false, err
		}
		ownedByPod := slices.ContainsFunc(pvc.OwnerReferences, func(ref metav1.OwnerReference) bool { return ref.UID == pod.UID })
		ownedByWorkspace := slices.ContainsFunc(pvc.OwnerReferences, func(ref metav1.OwnerReference) bool { return ref.UID == ws.UID })
		if !ownedByPod || ownedByWorkspace {
			continue
		}
		patch := client.MergeFromWithOptions(pvc.DeepCopy(), client.MergeFromWithOptimisticLock{})
		pvc.OwnerReferences = append(pvc.OwnerReferences, metav1.OwnerReference{
			APIVersion: berthv1alpha1.SchemeGroupVersion.String(), Kind: "Workspace",
			Name: ws.Name, UID: ws.UID, BlockOwnerDeletion: ptr.To(false),
		})
		if err := r.client.Patch(ctx, pvc, patch); err != nil {
			return false, fmt.Errorf("give claim %s/%s to Workspace %s: %w", pvc.Namespace, pvc.Name, ws.Name, err)
		}
	}
	return pending, nil
}

// adoptNew records a labelled workspace Pod that no Workspace holds as a
// new Workspace, started, with the Pod as its current Pod.
func (c *Controller) adoptNew(ctx context.Context, req ctrl.Request, pods []corev1.Pod) error {
	var pod *corev1.Pod
	for i := range pods {
		p := &pods[i]
		if metav1.GetControllerOf(p) == nil && !podGoing(p) && (pod == nil || p.CreationTimestamp.Before(&pod.CreationTimestamp)) {
			pod = p
		}
	}
	if pod == nil {
		return nil
	}
	org, err := c.org(ctx, req.Namespace)
	if err != nil || org == nil {
		// berth admits no workspace in a namespace without an org.
		return err
	}
	ws := &berthv1alpha1.Workspace{
		ObjectMeta: metav1.ObjectMeta{Name: req.Name, Namespace: req.Namespace},
		Spec:       berthv1alpha1.WorkspaceSpec{Started: true, Template: TemplateFromPod(pod)},
	}
	if u := pod.Labels[berthv1alpha1.LabelUser]; u != "" {
		ws.Labels = map[string]string{berthv1alpha1.LabelUser: u}
	}
	if err := c.client.Create(ctx, ws); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return nil // the Workspace's own event adopts the Pod
		}
		return fmt.Errorf("record Pod %s/%s as a Workspace: %w", pod.Namespace, pod.Name, err)
	}
	adoptions.Inc()
	r := &run{Controller: c, ws: ws, org: org, now: c.clock.Now()}
	return r.adopt(ctx, pod)
}

// adopt makes pod the Workspace's current Pod.
func (r *run) adopt(ctx context.Context, pod *corev1.Pod) error {
	ws := r.ws
	// A strategic merge adds the reference by its uid and keeps any other;
	// the API server refuses a second controller.
	patch := client.StrategicMergeFrom(pod.DeepCopy())
	pod.OwnerReferences = append(pod.OwnerReferences, metav1.OwnerReference{
		APIVersion: berthv1alpha1.SchemeGroupVersion.String(), Kind: "Workspace",
		Name: ws.Name, UID: ws.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(false),
	})
	if err := r.client.Patch(ctx, pod, patch); err != nil {
		return fmt.Errorf("adopt Pod %s/%s into Workspace %s: %w", pod.Namespace, pod.Name, ws.Name, err)
	}
	r.recorder.Eventf(ws, pod, corev1.EventTypeNormal, "Adopted", "Adopt",
		"Pod %s is recorded as this workspace: it is stopped when idle and comes back after a lost node", pod.Name)
	return r.writeStatus(ctx, ws, func(s *berthv1alpha1.WorkspaceStatus) {
		s.Phase = berthv1alpha1.WorkspaceStarting
		s.PodName, s.PodUID, s.NodeName = pod.Name, pod.UID, pod.Spec.NodeName
		s.StartedAt = &pod.CreationTimestamp
		s.Claims = Claims(&ws.Spec.Template)
	})
}

// org returns the Organization of a namespace, nil when it has none.
func (c *Controller) org(ctx context.Context, ns string) (*berthv1alpha1.Organization, error) {
	name, err := controllers.NamespaceOrg(ctx, c.client, ns)
	if err != nil || name == "" {
		return nil, err
	}
	org := &berthv1alpha1.Organization{}
	if err := c.client.Get(ctx, client.ObjectKey{Name: name}, org); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	return org, nil
}

// writeStatus applies change to a copy of the status and patches what
// differs. Only this controller writes the status, one reconcile per
// Workspace at a time.
func (c *Controller) writeStatus(ctx context.Context, ws *berthv1alpha1.Workspace, change func(*berthv1alpha1.WorkspaceStatus)) error {
	st := ws.Status.DeepCopy()
	change(st)
	if equality.Semantic.DeepEqual(st, &ws.Status) {
		return nil
	}
	patch := client.MergeFrom(ws.DeepCopy())
	ws.Status = *st
	if err := c.client.Status().Patch(ctx, ws, patch); err != nil {
		return fmt.Errorf("update status of Workspace %s/%s: %w", ws.Namespace, ws.Name, err)
	}
	return nil
}

func setCondition(s *berthv1alpha1.WorkspaceStatus, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg})
}

// forgetOld drops deleted Pods seen long ago, Pods seen running long ago
// that went before their status recorded them, and starts no longer in
// flight.
func (c *Controller) forgetOld() {
	now := c.clock.Now()
	c.gone.Range(func(k, v any) bool {
		if now.Sub(v.(goneRecord).at) > 10*time.Minute {
			c.gone.Delete(k)
		}
		return true
	})
	c.ran.Range(func(k, v any) bool {
		if now.Sub(v.(time.Time)) > 10*time.Minute {
			c.ran.Delete(k)
		}
		return true
	})
	c.starting.Range(func(k, v any) bool {
		if now.Sub(v.(time.Time)) > inFlight {
			c.starting.Delete(k)
		}
		return true
	})
}
