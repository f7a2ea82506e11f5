package metering

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/controllers"
	"berth.dev/berth/pkg/placement"
	"berth.dev/berth/pkg/requests"
)

// Finalizer keeps a labelled Pod until the meter has written its last
// interval: a Pod deleted while the meter is down is still charged to the
// second when it comes back.
const Finalizer = berthv1alpha1.FinalizerMetering

// DefaultPoolLabel is the node label that names a node's pool, as the
// prices name it.
const DefaultPoolLabel = berthv1alpha1.LabelPool

// Store is what the meter and the mirrors need of the database.
type Store interface {
	DB
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Meter writes the usage of every labelled Pod, one interval at a time. It
// runs as a controller on the elected leader: each Pod is reconciled when it
// changes and at each interval's end, and its rows from the last written
// interval up to now are written again with their absolute values. A Pod
// that ends (it finishes, or its delete is requested) has its last rows
// written before its finalizer is removed.
type Meter struct {
	Client    client.Client
	DB        Store
	Prices    Prices
	Keys      placement.Keys
	PoolLabel string
	Interval  time.Duration
	Clock     clock.PassiveClock
	// Measure reads what Pods use from metrics.k8s.io; nil charges
	// requests alone.
	Measure *Measurer

	mu sync.Mutex
	// last holds, per Pod, the last interval this process wrote. A Pod it
	// has not written is looked up in the database.
	last map[types.UID]Row
	// samples holds what Pods were measured to use in the intervals not
	// yet written for good.
	samples samples
	// tokens holds the vLLM token counters of inference Pods.
	tokens map[types.UID]*tokenState
}

// Register adds the meter to mgr as a controller of labelled Pods.
func (m *Meter) Register(mgr ctrl.Manager) error {
	if m.Interval <= 0 {
		m.Interval = DefaultInterval
	}
	if m.Clock == nil {
		m.Clock = clock.RealClock{}
	}
	if m.PoolLabel == "" {
		m.PoolLabel = DefaultPoolLabel
	}
	m.last = map[types.UID]Row{}
	m.samples = samples{}
	m.tokens = map[types.UID]*tokenState{}
	labelled := predicate.NewPredicateFuncs(func(o client.Object) bool {
		_, ok := o.GetLabels()[berthv1alpha1.LabelClass]
		return ok
	})
	return ctrl.NewControllerManagedBy(mgr).Named("meter").
		For(&corev1.Pod{}, builder.WithPredicates(labelled)).
		Complete(m)
}

// Reconcile writes one Pod's usage up to now.
func (m *Meter) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var pod corev1.Pod
	if err := m.Client.Get(ctx, req.NamespacedName, &pod); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if _, ok := pod.Labels[berthv1alpha1.LabelClass]; !ok {
		return reconcile.Result{}, nil
	}
	now := m.Clock.Now()
	end, ended := endOf(&pod)
	if !ended && !controllerutil.ContainsFinalizer(&pod, Finalizer) {
		patch := client.MergeFromWithOptions(pod.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.AddFinalizer(&pod, Finalizer)
		if err := m.Client.Patch(ctx, &pod, patch); err != nil {
			return reconcile.Result{}, fmt.Errorf("add the metering finalizer: %w", err)
		}
	}
	facts, err := m.facts(ctx, &pod)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !ended {
		if !facts.Start.IsZero() {
			m.measure(ctx, &pod, now)
			if err := m.write(ctx, facts, now); err != nil {
				return reconcile.Result{}, err
			}
		}
		next := now.Truncate(m.Interval).Add(m.Interval)
		return reconcile.Result{RequeueAfter: next.Sub(now) + time.Second}, nil
	}
	if !facts.Start.IsZero() {
		facts.End = end
		if err := m.end(ctx, facts); err != nil {
			return reconcile.Result{}, err
		}
	}
	if controllerutil.ContainsFinalizer(&pod, Finalizer) {
		patch := client.MergeFromWithOptions(pod.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.RemoveFinalizer(&pod, Finalizer)
		if err := m.Client.Patch(ctx, &pod, patch); client.IgnoreNotFound(err) != nil {
			return reconcile.Result{}, fmt.Errorf("remove the metering finalizer: %w", err)
		}
	}
	m.mu.Lock()
	delete(m.last, pod.UID)
	delete(m.samples, pod.UID)
	delete(m.tokens, pod.UID)
	m.mu.Unlock()
	return reconcile.Result{}, nil
}

// measure takes a sample of what a running Pod uses, for the interval
// holding now. A failed measurement charges requests, and is logged.
func (m *Meter) measure(ctx context.Context, pod *corev1.Pod, now time.Time) {
	if m.Measure == nil {
		return
	}
	u, err := m.Measure.Use(ctx, pod.Namespace, pod.Name)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "no use measured; requests are charged for this interval")
		return
	}
	if !u.Measured {
		return
	}
	m.mu.Lock()
	m.samples.add(pod.UID, now.Truncate(m.Interval), u)
	m.mu.Unlock()
}

// use returns what was measured of one Pod, per interval, for Intervals:
// its use samples and the tokens its vLLM counted.
func (m *Meter) use(uid string) func(time.Time) Usage {
	tokens := m.tokensOf(types.UID(uid))
	m.mu.Lock()
	measured := m.samples.of(types.UID(uid))
	m.mu.Unlock()
	return func(start time.Time) Usage {
		u := measured(start)
		t, counters := tokens(start)
		u.PromptTokens, u.GenerationTokens = t.prompt, t.generation
		if counters != nil {
			u.PromptCounter, u.GenerationCounter = &counters[0], &counters[1]
		}
		return u
	}
}

// write writes a running Pod's rows from the last interval written up to
// now.
func (m *Meter) write(ctx context.Context, p Pod, now time.Time) error {
	from, last, err := m.resume(ctx, p)
	if err != nil {
		return err
	}
	rows := Intervals(p, from, now, m.Interval, m.use(p.UID))
	if err := Write(ctx, m.DB, rows); err != nil {
		writeErrors.Inc()
		return err
	}
	m.written(p, last, rows)
	return nil
}

// end writes an ended Pod's final rows. They start at the last interval
// written, or earlier, at the interval holding the end: a meter that saw
// the end late may have charged past it.
func (m *Meter) end(ctx context.Context, p Pod) error {
	from, last, err := m.resume(ctx, p)
	if err != nil {
		return err
	}
	if e := p.End.Truncate(m.Interval); e.Before(from) {
		from = e
	}
	rows := Intervals(p, from, p.End, m.Interval, m.use(p.UID))
	if err := End(ctx, m.DB, p.UID, p.End, rows); err != nil {
		writeErrors.Inc()
		return err
	}
	m.written(p, last, rows)
	return nil
}

// resume returns where p's rows go on from: the start of the last interval
// written (it may have been open), or p's start. last is the row this
// process wrote there, zero when it wrote none.
func (m *Meter) resume(ctx context.Context, p Pod) (time.Time, Row, error) {
	m.mu.Lock()
	last, ok := m.last[types.UID(p.UID)]
	m.mu.Unlock()
	if ok {
		return last.IntervalStart, last, nil
	}
	var stored *time.Time
	if err := m.DB.QueryRow(ctx, "SELECT max(interval_start) FROM usage_intervals WHERE uid = $1", p.UID).Scan(&stored); err != nil {
		writeErrors.Inc()
		return time.Time{}, Row{}, fmt.Errorf("read where Pod %s/%s's usage stopped: %w", p.Namespace, p.Name, err)
	}
	if stored != nil {
		return *stored, Row{}, nil
	}
	return p.Start, Row{}, nil
}

// written counts rows in the usage metrics and remembers the last one.
// last is the row this process wrote before at the first row's interval,
// if any: only what a row adds to it is counted.
func (m *Meter) written(p Pod, last Row, rows []Row) {
	if len(rows) == 0 {
		return
	}
	rowsWritten.Add(float64(len(rows)))
	for _, r := range rows {
		prev := Row{}
		if !last.IntervalStart.IsZero() && r.IntervalStart.Equal(last.IntervalStart) {
			prev = last
		}
		count(r, prev)
	}
	m.mu.Lock()
	m.last[types.UID(p.UID)] = rows[len(rows)-1]
	// What is written is in the database; only the open interval may be
	// rewritten by this process, from its samples.
	m.samples.written(types.UID(p.UID), rows[len(rows)-1].IntervalStart)
	if st := m.tokens[types.UID(p.UID)]; st != nil {
		for t := range st.byStart {
			if t.Before(rows[len(rows)-1].IntervalStart) {
				delete(st.byStart, t)
			}
		}
	}
	m.mu.Unlock()
}

// facts gathers what the rows need of the Pod, its namespace and its node.
func (m *Meter) facts(ctx context.Context, pod *corev1.Pod) (Pod, error) {
	org, err := controllers.NamespaceOrg(ctx, m.Client, pod.Namespace)
	if err != nil {
		return Pod{}, err
	}
	if org == "" {
		// A labelled Pod outside any org's namespaces is still charged,
		// to no org by name.
		org = "-"
	}
	r := requests.Of(&pod.Spec)
	p := Pod{
		UID: string(pod.UID), Namespace: pod.Namespace, Name: pod.Name, Org: org,
		Class: pod.Labels[berthv1alpha1.LabelClass], User: pod.Labels[berthv1alpha1.LabelUser],
		Workspace: pod.Labels[berthv1alpha1.LabelWorkspace], Project: pod.Labels[berthv1alpha1.LabelProject],
		Node: pod.Spec.NodeName,
		CPU:  float64(r.Cpu().MilliValue()) / 1000, MemoryGiB: gib(r.Memory()),
		GPU: float64(requests.GPUs(&pod.Spec)), ScratchGiB: gib(r.StorageEphemeral()),
	}
	if pod.Status.StartTime != nil {
		p.Start = pod.Status.StartTime.Time
	}
	if p.VolumeGiB, err = m.volumeGiB(ctx, pod); err != nil {
		return Pod{}, err
	}
	if p.Node == "" {
		return p, nil
	}
	var node corev1.Node
	if err := m.Client.Get(ctx, client.ObjectKey{Name: p.Node}, &node); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return Pod{}, err
		}
		// The node is gone (a reclaimed spot node): no price is known.
		return p, nil
	}
	p.Pool, p.Spot = node.Labels[m.PoolLabel], m.Keys.Spot.Matches(node.Labels)
	a := node.Status.Allocatable
	gpus := a[placement.GPUResource]
	p.AllocCPU, p.AllocMemoryGiB, p.AllocGPU = float64(a.Cpu().MilliValue())/1000, gib(a.Memory()), float64(gpus.Value())
	p.NodeShare = NodeShare(p.CPU, p.MemoryGiB, p.GPU, p.AllocCPU, p.AllocMemoryGiB, p.AllocGPU)
	p.NodePrice = m.Prices.Hourly(p.Pool, p.Spot)
	return p, nil
}

// volumeGiB sums the requested sizes of the Pod's claims.
func (m *Meter) volumeGiB(ctx context.Context, pod *corev1.Pod) (float64, error) {
	total := 0.0
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim == nil {
			continue
		}
		var pvc corev1.PersistentVolumeClaim
		err := m.Client.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: v.PersistentVolumeClaim.ClaimName}, &pvc)
		if err != nil {
			if client.IgnoreNotFound(err) == nil {
				continue
			}
			return 0, err
		}
		total += gib(pvc.Spec.Resources.Requests.Storage())
	}
	return total, nil
}

// endOf returns when the Pod stopped running and whether it has: a
// finished Pod at its last container's finish, a Pod whose delete was
// requested at that request (deletionTimestamp less the grace period),
// whichever came first when both did. The end must not depend on which
// the meter sees first: a deleted Pod's containers finish after the
// request, and a meter kept from the database sees only the later state.
func endOf(pod *corev1.Pod) (time.Time, bool) {
	finished := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	var end time.Time
	if finished {
		for _, cs := range pod.Status.ContainerStatuses {
			if t := cs.State.Terminated; t != nil && t.FinishedAt.After(end) {
				end = t.FinishedAt.Time
			}
		}
	}
	if pod.DeletionTimestamp != nil {
		if d := deleteRequested(pod); end.IsZero() || d.Before(end) {
			end = d
		}
		return end, true
	}
	if !finished {
		return time.Time{}, false
	}
	if end.IsZero() {
		// No container says when: the Pod's last condition change.
		for _, c := range pod.Status.Conditions {
			if c.LastTransitionTime.After(end) {
				end = c.LastTransitionTime.Time
			}
		}
	}
	return end, true
}

func deleteRequested(pod *corev1.Pod) time.Time {
	t := pod.DeletionTimestamp.Time
	if g := pod.DeletionGracePeriodSeconds; g != nil {
		t = t.Add(-time.Duration(*g) * time.Second)
	}
	return t
}

func gib(q *resource.Quantity) float64 {
	return float64(q.Value()) / (1 << 30)
}
