// Package workspaces benchmarks waking workspaces against creating the same
// Pods plainly, and the recovery of the workspaces of a deleted node, on
// one local cluster with berth-manager's webhooks and controllers running.
package workspaces

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/controllers/workspaces"
	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

func TestMain(m *testing.M) { framework.Main(m) }

const (
	// concurrent wakes, and plain creates, at once.
	concurrent = 50
	// rounds of each path for 50 wakes at once, and for a single wake;
	// each round alternates which goes first.
	concurrentRounds = 4
	singleRounds     = 20
	// lostWorkspaces share the node BenchmarkSpotLoss deletes.
	lostWorkspaces = 20
	spotRounds     = 3
)

var (
	managerOnce sync.Once
	bench       struct {
		env     *framework.ClusterEnv
		c       client.WithWatch
		manager *framework.Process
	}
)

// setup starts the package's berth-manager (webhooks, orgstatus and the
// workspaces controller; the stock scheduler places every Pod) and a client
// without client-side rate limits.
func setup(b *testing.B) (*framework.ClusterEnv, client.WithWatch) {
	b.Helper()
	env := framework.Cluster(b)
	managerOnce.Do(func() {
		bench.manager = framework.StartPackageManager(b, env, framework.ManagerOptions{
			Args: []string{"--scheduler-name=", "--controllers=orgstatus,workspaces"},
		})
		cfg := *env.Config
		cfg.QPS, cfg.Burst = 1000, 1000
		c, err := client.NewWithWatch(&cfg, client.Options{Scheme: env.Scheme})
		if err != nil {
			b.Fatal(err)
		}
		bench.env, bench.c = env, c
	})
	return bench.env, bench.c
}

// BenchmarkWake wakes stopped workspaces (spec.started set to true, as
// kubectl patch or berth-manager's API does) and, in the same rounds,
// creates the very Pods those wakes create, plainly. Both go through
// berth's admission and the stock scheduler. It does so for a single wake
// (BenchmarkWake/1, 20 rounds) and for 50 at once (BenchmarkWake/50, 4
// rounds), each round alternating which path goes first. It reports, from
// the request to the Pod seen Running, p50 and p95 of each path and
// wake/plain: for 50, the median of the rounds' ratios; for 1, whose
// rounds hold one sample each, the ratio of the pooled percentiles. The
// target is p95 < 2 s and at most 1.5x plain.
//
// Each round of 50 also prints when the Pods were first seen, and seen
// bound: for a wake, first seen is the patch plus berth-manager's part
// (its reconcile and the Pod's admission); for a plain create, the
// create's admission alone. From there to Running is the scheduler's and
// the node's part, the same work on both paths. Every round starts once
// the last one's writes are done (settle), as a wake hours after its stop
// does. A wake round ends once every Workspace's status says Running,
// which trails the Pod by a second (see the workspaces controller's
// runningSettle); it reports that time too. It only reports: no target
// fails it.
func BenchmarkWake(b *testing.B) {
	env, c := setup(b)
	org := testutil.Org("bench-wake").Obj()
	env.Create(b, org)
	ns := env.Namespace(b, org.Name)
	names := make([]string, concurrent)
	for i := range names {
		names[i] = fmt.Sprintf("ide-%02d", i)
		env.Create(b, stoppedWorkspace(ns, names[i]))
	}
	// Plain Pods are controlled by a ConfigMap: berth does not adopt them,
	// and deleting it deletes them.
	holder := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "plain-pods", Namespace: ns}}
	env.Create(b, holder)

	for _, n := range []int{1, concurrent} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { wakeRounds(b, c, ns, org.Name, names[:n], holder) })
	}
}

// wakeRounds times waking names at once against creating their Pods
// plainly, in alternating rounds: 4 of 50 wakes, or 20 of a single one.
func wakeRounds(b *testing.B, c client.WithWatch, ns, org string, names []string, holder *corev1.ConfigMap) {
	rounds := b.N * concurrentRounds
	if len(names) == 1 {
		rounds = b.N * singleRounds
	}
	var wakeAll, plainAll, recordedAll []time.Duration
	var p50s, p95s []float64
	fmt.Println()
	for r := range rounds {
		var wake, plain, recorded []time.Duration
		for k := range 2 {
			settle(b, c, ns, org)
			if (r+k)%2 == 0 {
				wake, recorded = wakeRound(b, c, ns, names)
			} else {
				plain = plainRound(b, c, ns, names, holder)
			}
		}
		if len(names) > 1 {
			logf("round %d: wake p50 %s p95 %s, plain p50 %s p95 %s", r+1,
				ms(framework.Percentile(wake, 50)), ms(framework.Percentile(wake, 95)), ms(framework.Percentile(plain, 50)), ms(framework.Percentile(plain, 95)))
		}
		wakeAll, plainAll, recordedAll = append(wakeAll, wake...), append(plainAll, plain...), append(recordedAll, recorded...)
		p50s = append(p50s, ratio(framework.Percentile(wake, 50), framework.Percentile(plain, 50)))
		p95s = append(p95s, ratio(framework.Percentile(wake, 95), framework.Percentile(plain, 95)))
	}
	wake95, plain95 := framework.Percentile(wakeAll, 95), framework.Percentile(plainAll, 95)
	logf("%d at once, %d rounds: wake p50 %s p95 %s; plain create p50 %s p95 %s; pooled wake/plain p95 %.2fx",
		len(names), rounds, ms(framework.Percentile(wakeAll, 50)), ms(wake95), ms(framework.Percentile(plainAll, 50)), ms(plain95), ratio(wake95, plain95))
	logf("the wakes' statuses said Running after p50 %s p95 %s (the wake API answers from the Pod)", ms(framework.Percentile(recordedAll, 50)), ms(framework.Percentile(recordedAll, 95)))
	// A round of one wake has one sample: its ratio is the pooled one.
	ratio95 := ratio(wake95, plain95)
	if len(names) > 1 {
		ratio95 = framework.Median(p95s)
		logf("median of rounds' wake/plain: p50 %.2fx, p95 %.2fx (target: p95 < 2s, at most 1.5x)", framework.Median(p50s), ratio95)
	} else {
		logf("wake/plain: p50 %.2fx, p95 %.2fx (target: p95 < 2s, at most 1.5x)", ratio(framework.Percentile(wakeAll, 50), framework.Percentile(plainAll, 50)), ratio95)
	}
	b.ReportMetric(wake95.Seconds(), "wake-p95-s")
	b.ReportMetric(ratio95, "wake/plain-p95")
}

func stoppedWorkspace(ns, name string) *berthv1alpha1.Workspace {
	pod := testutil.Pod(name).Class(berthv1alpha1.ClassWorkspace).User("ana").Obj()
	return &berthv1alpha1.Workspace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: berthv1alpha1.WorkspaceSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels}, Spec: pod.Spec,
		}},
	}
}

// wakeRound wakes every workspace at once, returns each one's time from its
// patch to its Pod seen Running and to its status saying Running, then
// stops them all and waits until their Pods are gone.
func wakeRound(b *testing.B, c client.WithWatch, ns string, names []string) (running, recorded []time.Duration) {
	b.Helper()
	seen := watchRunning(b, c, ns, len(names), func(p *corev1.Pod) string { return p.Labels[berthv1alpha1.LabelWorkspace] })
	statuses := watchRecorded(b, c, ns, len(names))
	sent := make([]time.Time, len(names))
	patched := setAll(b, c, ns, names, true, sent)
	if len(names) > 1 {
		logf("  the patches returned after p50 %s, p95 %s", ms(framework.Percentile(patched, 50)), ms(framework.Percentile(patched, 95)))
	}
	running = collect(b, ns, seen, names, sent)
	// The round ends when every status records its Running Pod, so that
	// the next round is not timed against this one's writes.
	recorded = collect(b, ns, statuses, names, sent)
	if len(names) > 1 {
		logf("  the statuses said Running after p50 %s, p95 %s", ms(framework.Percentile(recorded, 50)), ms(framework.Percentile(recorded, 95)))
	}
	setAll(b, c, ns, names, false, nil)
	waitStopped(b, c, ns)
	return running, recorded
}

// plainRound creates the Pods a wake would, plainly, at once, and returns
// each one's time from its create to Running, then deletes them.
func plainRound(b *testing.B, c client.WithWatch, ns string, names []string, holder *corev1.ConfigMap) []time.Duration {
	b.Helper()
	seen := watchRunning(b, c, ns, len(names), func(p *corev1.Pod) string {
		if metav1.IsControlledBy(p, holder) {
			return p.Name
		}
		return ""
	})
	pods := make([]*corev1.Pod, len(names))
	for i, name := range names {
		ws := &berthv1alpha1.Workspace{}
		if err := c.Get(b.Context(), client.ObjectKey{Namespace: ns, Name: name}, ws); err != nil {
			b.Fatal(err)
		}
		pods[i] = workspaces.PodFor(ws, name)
		pods[i].OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: holder.Name, UID: holder.UID, Controller: ptr.To(true)}}
	}
	sent := make([]time.Time, len(names))
	var wg sync.WaitGroup
	for i := range pods {
		wg.Go(func() {
			sent[i] = time.Now()
			if err := c.Create(b.Context(), pods[i]); err != nil {
				b.Errorf("create %s: %v", pods[i].Name, err)
			}
		})
	}
	wg.Wait()
	out := collect(b, ns, seen, names, sent)
	if err := c.DeleteAllOf(b.Context(), &corev1.Pod{}, client.InNamespace(ns), client.MatchingLabels{berthv1alpha1.LabelClass: string(berthv1alpha1.ClassWorkspace)}); err != nil {
		b.Fatal(err)
	}
	waitNoPods(b, c, ns)
	return out
}

// setAll sets spec.started on every workspace at once, recording when each
// patch was sent, and returns how long each patch took. A stop is written
// as berth's idle stop writes it, so that the next wake is the common one:
// a wake after an idle stop.
func setAll(b *testing.B, c client.Client, ns string, names []string, started bool, sent []time.Time) []time.Duration {
	b.Helper()
	took := make([]time.Duration, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			ws := &berthv1alpha1.Workspace{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
			body := []byte(`{"spec":{"started":true}}`)
			if !started {
				body = fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}},"spec":{"started":false}}`, berthv1alpha1.AnnotationStopReason, berthv1alpha1.StoppedIdle)
			}
			start := time.Now()
			if sent != nil {
				sent[i] = start
			}
			if err := c.Patch(b.Context(), ws, client.RawPatch("application/merge-patch+json", body)); err != nil {
				b.Errorf("set started=%t on %s: %v", started, name, err)
			}
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	return took
}

// watchRunning watches the namespace's Pods and sends, once per key, the
// times a Pod with that key (from key; "" skips it) was first seen and
// first seen Running, until n keys have run.
// The watch resumes where it was when the API server closes it: a busy
// API server may, and a round would then wait on events it never gets.
func watchRunning(b *testing.B, c client.WithWatch, ns string, n int, key func(*corev1.Pod) string) <-chan seenAt {
	b.Helper()
	w := framework.WatchNamespace(b, c, ns, &corev1.PodList{})
	out := make(chan seenAt, 3*n)
	go func() {
		defer w.Stop()
		created, bound, done := map[string]bool{}, map[string]bool{}, map[string]bool{}
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			k := key(p)
			if k == "" {
				continue
			}
			if !created[k] {
				created[k] = true
				out <- seenAt{k, time.Now(), seenCreated}
			}
			if p.Spec.NodeName != "" && !bound[k] {
				bound[k] = true
				out <- seenAt{k, time.Now(), seenBound}
			}
			if p.Status.Phase != corev1.PodRunning || done[k] {
				continue
			}
			done[k] = true
			out <- seenAt{k, time.Now(), seenRunning}
			if len(done) == n {
				return
			}
		}
	}()
	return out
}

// watchRecorded watches the namespace's Workspaces and sends the time each
// one's status first says Running, until n have.
func watchRecorded(b *testing.B, c client.WithWatch, ns string, n int) <-chan seenAt {
	b.Helper()
	w := framework.WatchNamespace(b, c, ns, &berthv1alpha1.WorkspaceList{})
	out := make(chan seenAt, n)
	go func() {
		defer w.Stop()
		done := map[string]bool{}
		for ev := range w.ResultChan() {
			ws, ok := ev.Object.(*berthv1alpha1.Workspace)
			if !ok || done[ws.Name] || ws.Status.Phase != berthv1alpha1.WorkspaceRunning {
				continue
			}
			done[ws.Name] = true
			out <- seenAt{ws.Name, time.Now(), seenRunning}
			if len(done) == n {
				return
			}
		}
	}()
	return out
}

// seenAt is when the Pod of key was first seen at a stage.
type seenAt struct {
	key   string
	at    time.Time
	stage stage
}

// stage is how far a Pod has come.
type stage int

const (
	seenCreated stage = iota
	seenBound
	seenRunning
)

func collect(b *testing.B, ns string, seen <-chan seenAt, names []string, sent []time.Time) []time.Duration {
	b.Helper()
	index := map[string]int{}
	for i, n := range names {
		index[n] = i
	}
	out := make([]time.Duration, 0, len(names))
	var created, bound []time.Duration
	timeout := time.After(3 * time.Minute)
	for len(out) < len(names) {
		select {
		case s := <-seen:
			switch s.stage {
			case seenCreated:
				created = append(created, s.at.Sub(sent[index[s.key]]))
				continue
			case seenBound:
				bound = append(bound, s.at.Sub(sent[index[s.key]]))
				continue
			}
			out = append(out, s.at.Sub(sent[index[s.key]]))
		case <-timeout:
			b.Fatalf("only %d of %d Pods running after 3 minutes; %s; berth-manager's log ends:\n%s", len(out), len(names), describe(b, ns), bench.manager.Tail(40))
		}
	}
	if len(created) > 1 {
		logf("  the Pods seen created after p50 %s, p95 %s; bound after p50 %s, p95 %s", ms(framework.Percentile(created, 50)), ms(framework.Percentile(created, 95)), ms(framework.Percentile(bound, 50)), ms(framework.Percentile(bound, 95)))
	}
	return out
}

// describe counts the namespace's Pods by phase and lists the Workspaces'
// status messages, for a round that did not finish.
func describe(b *testing.B, ns string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var pods corev1.PodList
	var list berthv1alpha1.WorkspaceList
	if err := bench.c.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		return err.Error()
	}
	if err := bench.c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return err.Error()
	}
	phases, messages := map[string]int{}, map[string]int{}
	for _, p := range pods.Items {
		phases[fmt.Sprintf("%s on %q", p.Status.Phase, p.Spec.NodeName)]++
	}
	for _, ws := range list.Items {
		messages[fmt.Sprintf("started=%t phase=%s %q", ws.Spec.Started, ws.Status.Phase, ws.Status.Message)]++
	}
	return fmt.Sprintf("Pods by phase: %v; Workspaces: %v", phases, messages)
}

// waitStopped waits until the namespace has no Pods and berth-manager has
// written every Workspace's stop, so that the next round is not timed
// against the last one's writes.
func waitStopped(b *testing.B, c client.Client, ns string) {
	b.Helper()
	waitNoPods(b, c, ns)
	err := wait.PollUntilContextTimeout(b.Context(), 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		var list berthv1alpha1.WorkspaceList
		err := c.List(ctx, &list, client.InNamespace(ns))
		for _, ws := range list.Items {
			if ws.Status.Phase != berthv1alpha1.WorkspaceStopped {
				return false, err
			}
		}
		return true, err
	})
	if err != nil {
		b.Fatalf("Workspaces of %s not all Stopped: %v; %s", ns, err, describe(b, ns))
	}
}

// settle waits until the last round's writes are done: no Pods, every
// Workspace Stopped with its stop's reason spent, and the Organization's
// status counting no workspace. Each round then starts on a quiet API
// server, as a wake long after its stop does.
func settle(b *testing.B, c client.Client, ns, org string) {
	b.Helper()
	waitNoPods(b, c, ns)
	err := wait.PollUntilContextTimeout(b.Context(), 100*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		var list berthv1alpha1.WorkspaceList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, ws := range list.Items {
			if ws.Status.Phase != berthv1alpha1.WorkspaceStopped || ws.Annotations[berthv1alpha1.AnnotationStopReason] != "" {
				return false, nil
			}
		}
		o := &berthv1alpha1.Organization{}
		err := c.Get(ctx, client.ObjectKey{Name: org}, o)
		return err == nil && o.Status.Workspaces == 0, err
	})
	if err != nil {
		b.Fatalf("namespace %s did not settle: %v; %s", ns, err, describe(b, ns))
	}
}

func waitNoPods(b *testing.B, c client.Client, ns string) {
	b.Helper()
	err := wait.PollUntilContextTimeout(b.Context(), 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		var list corev1.PodList
		err := c.List(ctx, &list, client.InNamespace(ns))
		return len(list.Items) == 0, err
	})
	if err != nil {
		b.Fatalf("Pods of %s still there: %v", ns, err)
	}
}

// BenchmarkSpotLoss puts 20 workspaces on one spot node and deletes the
// node, as a reclaimed spot VM's node is deleted, and measures, per
// workspace, the time from the delete to its Pod seen Running on another
// node: p95 and max per round. Other nodes are cordoned while the node
// fills. It only reports.
func BenchmarkSpotLoss(b *testing.B) {
	env, c := setup(b)
	org := testutil.Org("bench-spot").Obj()
	env.Create(b, org)
	ns := env.Namespace(b, org.Name)
	pools, err := localcluster.DefaultPools()
	if err != nil {
		b.Fatal(err)
	}
	spot, _ := pools.Get("spot-ssd")
	names := make([]string, lostWorkspaces)
	for i := range names {
		names[i] = fmt.Sprintf("lost-%02d", i)
		env.Create(b, stoppedWorkspace(ns, names[i]))
	}
	fmt.Println()
	var p95s, maxes []float64
	for r := range b.N * spotRounds {
		doomed := spot.Node(900 + r)
		if err := c.Create(b.Context(), doomed); err != nil {
			b.Fatal(err)
		}
		uncordon := cordonAllBut(b, c, doomed.Name)
		seen := watchRunning(b, c, ns, len(names), func(p *corev1.Pod) string {
			if p.Spec.NodeName != doomed.Name {
				return ""
			}
			return p.Labels[berthv1alpha1.LabelWorkspace]
		})
		filled := make([]time.Time, len(names))
		setAll(b, c, ns, names, true, filled)
		collect(b, ns, seen, names, filled)
		uncordon()

		seen = watchRunning(b, c, ns, len(names), func(p *corev1.Pod) string {
			if p.Spec.NodeName == doomed.Name {
				return ""
			}
			return p.Labels[berthv1alpha1.LabelWorkspace]
		})
		start := time.Now()
		if err := c.Delete(b.Context(), doomed); err != nil {
			b.Fatal(err)
		}
		sent := make([]time.Time, len(names))
		for i := range sent {
			sent[i] = start
		}
		back := collect(b, ns, seen, names, sent)
		logf("round %d: %d workspaces of a deleted node running again: p50 %s p95 %s max %s", r+1, len(names),
			ms(framework.Percentile(back, 50)), ms(framework.Percentile(back, 95)), ms(framework.Percentile(back, 100)))
		p95s = append(p95s, framework.Percentile(back, 95).Seconds())
		maxes = append(maxes, framework.Percentile(back, 100).Seconds())
		setAll(b, c, ns, names, false, nil)
		waitStopped(b, c, ns)
	}
	logf("median over %d rounds: p95 %.2fs, max %.2fs", len(p95s), framework.Median(p95s), framework.Median(maxes))
	b.ReportMetric(framework.Median(p95s), "recover-p95-s")
}

// cordonAllBut marks every schedulable node but keep unschedulable and
// returns what undoes it.
func cordonAllBut(b *testing.B, c client.Client, keep string) func() {
	b.Helper()
	var nodes corev1.NodeList
	if err := c.List(b.Context(), &nodes); err != nil {
		b.Fatal(err)
	}
	set := func(name string, v bool) {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		body := fmt.Appendf(nil, `{"spec":{"unschedulable":%t}}`, v)
		if err := c.Patch(context.Background(), node, client.RawPatch("application/merge-patch+json", body)); err != nil {
			b.Errorf("cordon %s=%t: %v", name, v, err)
		}
	}
	var cordoned []string
	for _, n := range nodes.Items {
		if n.Name != keep && !n.Spec.Unschedulable {
			set(n.Name, true)
			cordoned = append(cordoned, n.Name)
		}
	}
	return func() {
		for _, name := range cordoned {
			set(name, false)
		}
	}
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func logf(format string, args ...any) {
	fmt.Println("    " + strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", "\n    "))
}
