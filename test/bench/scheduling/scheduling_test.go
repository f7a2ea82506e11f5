package scheduling

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/demo"
	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/placement"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
	"berth.dev/berth/webhooks"
)

const (
	stock = "default-scheduler"
	berth = "berth-scheduler"
)

// setup returns the package's cluster with berth-scheduler and the stock
// kube-scheduler running beside it, by schedulerName. No webhook runs: each
// Pod is created as berth's webhook writes it (see admitted), keeping its
// schedulerName, so both schedulers get the same Pods and admission adds no
// load.
func setup(b *testing.B) (*framework.ClusterEnv, client.WithWatch, map[string]*framework.Process) {
	env := framework.Cluster(b)
	scheds := map[string]*framework.Process{
		stock: framework.StartStockScheduler(b, env),
		berth: framework.StartScheduler(b, env, nil),
	}
	cfg := *env.Config
	cfg.QPS, cfg.Burst = 5000, 5000
	c, err := client.NewWithWatch(&cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	return env, c, scheds
}

// A mix is one load of BenchmarkSchedulingThroughput: n Pods, the i-th
// built by pod.
type mix struct {
	name string
	n    int
	pod  func(i int) *testutil.PodBuilder
}

func workspace(cpu, memory string) *testutil.PodBuilder {
	return testutil.Pod("").Class(berthv1alpha1.ClassWorkspace).
		Resource(corev1.ResourceCPU, cpu).Resource(corev1.ResourceMemory, memory)
}

var mixes = []mix{
	// Workspaces of 1 or 2 CPU: berth packs about 8 to a node.
	{"workspaces", 2000, func(i int) *testutil.PodBuilder {
		if i%2 == 0 {
			return workspace("1", "2Gi")
		}
		return workspace("2", "4Gi")
	}},
	// Small workspaces: berth packs about 100 to a node, up to the Pod limit.
	{"dense", 3000, func(int) *testutil.PodBuilder { return workspace("100m", "200Mi") }},
	// The dense mix with every fifth Pod a build, so that the build rule's
	// path (builds per node) is timed on dense nodes.
	{"builds", 3000, func(i int) *testutil.PodBuilder {
		if i%5 == 0 {
			return testutil.Pod("").Class(berthv1alpha1.ClassBuild).
				Resource(corev1.ResourceCPU, "500m").Resource(corev1.ResourceMemory, "1Gi")
		}
		return workspace("100m", "200Mi")
	}},
}

// BenchmarkSchedulingThroughput gives each scheduler the same labelled Pods
// of each mix, in rounds that alternate which scheduler goes first, and
// reports pods/s (first to last binding) for each, their medians, and the
// median of the rounds' berth/stock ratios. It also reports the CPU time
// each scheduler process spent per Pod in its rounds, which separates the
// scheduler's own cost from the rest of the machine's.
//
// With BERTH_BENCH_CPUPROFILE=DIR it also writes a CPU profile of each
// scheduler during one more, uncounted round of each mix to
// DIR/kube-scheduler-MIX.pprof and DIR/berth-scheduler-MIX.pprof (read them
// with go tool pprof -top).
func BenchmarkSchedulingThroughput(b *testing.B) {
	env, c, scheds := setup(b)
	org := testutil.Org("throughput").Obj()
	env.Create(b, org)
	// A scheduler's first round after its start also pays for filling its
	// caches and growing its heap: one uncounted round of the first mix
	// for each, so that round 0 compares warm schedulers.
	for _, name := range []string{stock, berth} {
		ns := env.Namespace(b, org.Name)
		b.Logf("warm-up round %s %6.0f pods/s", name, throughput(b, c, org, ns, name, mixes[0]))
		cleanup(b, c, ns)
		quiet(b, scheds)
	}
	// An even number of rounds: each scheduler goes first as often as the
	// other. The one that goes second starts while the machine still
	// digests the first one's deletions, and with 5 rounds stock went
	// first 3 times.
	const rounds = 6
	for _, m := range mixes {
		b.Run(m.name, func(b *testing.B) {
			rates, cpu, failed := map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
			var ratios []float64
			for r := range rounds * b.N {
				order := []string{stock, berth}
				if r%2 == 1 {
					order = []string{berth, stock}
				}
				round := map[string]float64{}
				for _, name := range order {
					ns := env.Namespace(b, org.Name)
					before, failedBefore := cpuSeconds(b, scheds[name].PID()), failedAttempts(b, scheds[name])
					rate := throughput(b, c, org, ns, name, m)
					ms := 1000 * (cpuSeconds(b, scheds[name].PID()) - before) / float64(m.n)
					fails := failedAttempts(b, scheds[name]) - failedBefore
					round[name] = rate
					rates[name] = append(rates[name], rate)
					cpu[name] = append(cpu[name], ms)
					failed[name] = append(failed[name], fails)
					b.Logf("%s round %d %-18s %6.0f pods/s, %5.2f ms of scheduler CPU a Pod, %.0f failed attempts", m.name, r, name, rate, ms, fails)
					cleanup(b, c, ns)
					quiet(b, scheds)
				}
				ratios = append(ratios, round[berth]/round[stock])
			}
			for _, name := range []string{stock, berth} {
				if done := profile(b, scheds[name], m.name); done != nil {
					// One more round of each, not counted: the profiler's
					// cost stays out of the ratios.
					ns := env.Namespace(b, org.Name)
					b.Logf("%s profiled round %s %6.0f pods/s", m.name, name, throughput(b, c, org, ns, name, m))
					<-done
					cleanup(b, c, ns)
				}
			}
			s, bt, ratio := framework.Median(rates[stock]), framework.Median(rates[berth]), framework.Median(ratios)
			b.ReportMetric(s, "pods/s-stock")
			b.ReportMetric(bt, "pods/s-berth")
			b.ReportMetric(ratio, "ratio")
			b.ReportMetric(framework.Median(cpu[stock]), "cpu-ms/pod-stock")
			b.ReportMetric(framework.Median(cpu[berth]), "cpu-ms/pod-berth")
			b.ReportMetric(framework.Median(failed[stock]), "failed-attempts-stock")
			b.ReportMetric(framework.Median(failed[berth]), "failed-attempts-berth")
			b.Logf("%s: %d Pods on %d nodes: stock median %.0f pods/s, berth-scheduler median %.0f pods/s, median of round ratios %.2f %v (target >= 1.0); scheduler CPU a Pod, medians: stock %.2f ms, berth %.2f ms",
				m.name, m.n, nodeCount(b, c), s, bt, ratio, ratios, framework.Median(cpu[stock]), framework.Median(cpu[berth]))
		})
	}
}

// throughput creates the mix's Pods for sched and measures the binding
// rate, from the first Pod seen bound to the last, on a watch of the
// namespace. A watch sends each Pod's change once; listing the namespace
// over and over would make the API server encode every Pod again each
// time, a load on the machine that is not the schedulers' and that blurs
// the comparison.
func throughput(b *testing.B, c client.WithWatch, org *berthv1alpha1.Organization, ns, sched string, m mix) float64 {
	w := framework.WatchNamespace(b, c, ns, &corev1.PodList{})
	defer w.Stop()
	done := make(chan struct{})
	go create(b, c, org, m.n, func(i int) *corev1.Pod {
		p := m.pod(i).Namespace(ns).SchedulerName(sched).Obj()
		p.Name = fmt.Sprintf("p-%05d", i)
		return p
	}, done)
	var first, last time.Time
	bound := map[string]bool{}
	deadline := time.After(5 * time.Minute)
	for len(bound) < m.n {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				b.Fatalf("the watch of %s's Pods ended after %d of %d bound", ns, len(bound), m.n)
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod || p.Spec.NodeName == "" || bound[p.Name] {
				continue
			}
			bound[p.Name] = true
			last = time.Now()
			if first.IsZero() {
				first = last
			}
		case <-deadline:
			b.Fatalf("%s bound %d of %d Pods in 5m", sched, len(bound), m.n)
		}
	}
	<-done
	return float64(m.n-1) / last.Sub(first).Seconds()
}

// failedAttempts is how many scheduling attempts of the scheduler so far
// ended unschedulable or in an error: each costs a status write, an event
// and a backoff, so a lower rate at the same CPU a Pod may show here.
func failedAttempts(b *testing.B, sched *framework.Process) float64 {
	var sum float64
	for _, result := range []string{"unschedulable", "error"} {
		v, err := sched.MetricValue("scheduler_schedule_attempts_total", fmt.Sprintf("result=%q", result))
		if err != nil {
			b.Fatalf("%s metrics: %v", sched.Name, err)
		}
		sum += v
	}
	return sum
}

// cpuSeconds is the CPU time, user and system, process pid has used.
func cpuSeconds(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which is in parentheses: utime
	// and stime are the 12th and 13th, in clock ticks of 1/100 s.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}

// profile fetches a 15-second CPU profile of the scheduler into
// $BERTH_BENCH_CPUPROFILE/SCHEDULER-MIX.pprof, when that is set; the
// returned channel closes when it is written.
func profile(b *testing.B, sched *framework.Process, mix string) chan struct{} {
	dir := os.Getenv("BERTH_BENCH_CPUPROFILE")
	if dir == "" {
		return nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		path := filepath.Join(dir, sched.Name+"-"+mix+".pprof")
		if err := sched.Profile(b.Context(), 15*time.Second, path); err != nil {
			b.Errorf("profile %s: %v", sched.Name, err)
			return
		}
		b.Logf("wrote %s", path)
	}()
	return done
}

// BenchmarkReferenceLoad places docs/design.md's reference load (300 workspaces,
// 50 builds, 8 vLLM replicas), as berth's webhook mutates it, with each
// scheduler in turn, and reports nodes used against the bin-packing lower
// bound, and the share of workspaces and builds on spot nodes.
//
// A scheduler looks at a sample of the nodes for each Pod (about 42% of
// 1,120; the sample's start moves from Pod to Pod), so where the load
// lands, and how many nodes it takes, varies from one placement to the
// next. It is placed refRounds times with each scheduler, alternating
// which goes first; every round is logged, and the median is reported
// against the target.
func BenchmarkReferenceLoad(b *testing.B) {
	env, c, _ := setup(b)
	org := testutil.Org("reference").Obj()
	env.Create(b, org)
	pools, err := localcluster.DefaultPools()
	if err != nil {
		b.Fatal(err)
	}
	load := demo.ReferenceLoad(1)
	lb := lowerBound(load, pools)
	const refRounds = 3
	nodes, spots := map[string][]float64{}, map[string][]float64{}
	for r := range refRounds * b.N {
		order := []string{stock, berth}
		if r%2 == 1 {
			order = []string{berth, stock}
		}
		for _, sched := range order {
			ns := env.Namespace(b, org.Name)
			create(b, c, org, len(load), func(i int) *corev1.Pod {
				p := load[i].DeepCopy()
				p.Namespace, p.Spec.SchedulerName = ns, sched
				return p
			})
			placed := waitBound(b, c, ns, len(load))
			used, spot := NodesUsed(b.Context(), b, c, placed)
			nodes[sched] = append(nodes[sched], float64(used))
			spots[sched] = append(spots[sched], spot)
			b.Logf("round %d %-18s %d nodes, %.2fx the lower bound; %.0f%% of workspaces and builds on spot",
				r, sched, used, float64(used)/float64(lb), 100*spot)
			cleanup(b, c, ns)
		}
	}
	for _, sched := range []string{stock, berth} {
		used := framework.Median(nodes[sched])
		b.ReportMetric(used, "nodes-"+sched)
		b.ReportMetric(used/float64(lb), "x-lower-bound-"+sched)
		b.ReportMetric(framework.Median(spots[sched]), "spot-share-"+sched)
		b.Logf("%-18s median %.0f nodes for the reference load over %d placements %v, lower bound %d: %.2fx (target <= 1.10x for berth; worst %.2fx)",
			sched, used, len(nodes[sched]), nodes[sched], lb, used/float64(lb), slices.Max(nodes[sched])/float64(lb))
	}
}

// lowerBound is the fewest nodes the load fits on: workspaces and builds
// on spot local-SSD nodes, inference on GPU nodes.
func lowerBound(load []*corev1.Pod, pools *localcluster.Pools) int {
	var general, gpu []*corev1.Pod
	for _, p := range load {
		if p.Labels[berthv1alpha1.LabelClass] == string(berthv1alpha1.ClassInference) {
			gpu = append(gpu, p)
		} else {
			general = append(general, p)
		}
	}
	spotPool, _ := pools.Get("spot-ssd")
	gpuPool, _ := pools.Get("gpu")
	return demo.LowerBound(general, spotPool) + demo.LowerBound(gpu, gpuPool)
}

// NodesUsed counts the nodes the Pods landed on, and the share of
// workspaces and builds on spot nodes.
func NodesUsed(ctx context.Context, b *testing.B, c client.Client, pods []corev1.Pod) (int, float64) {
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		b.Fatal(err)
	}
	spotNode := map[string]bool{}
	for _, n := range nodes.Items {
		spotNode[n.Name] = n.Labels["kubernetes.azure.com/scalesetpriority"] == "spot"
	}
	used := map[string]bool{}
	onSpot, general := 0, 0
	for _, p := range pods {
		used[p.Spec.NodeName] = true
		if p.Labels[berthv1alpha1.LabelClass] != string(berthv1alpha1.ClassInference) {
			general++
			if spotNode[p.Spec.NodeName] {
				onSpot++
			}
		}
	}
	return len(used), float64(onSpot) / float64(max(general, 1))
}

// create creates n Pods, as berth's webhook writes them for org, 64 at once.
func create(b *testing.B, c client.Client, org *berthv1alpha1.Organization, n int, pod func(int) *corev1.Pod, done ...chan struct{}) {
	for _, d := range done {
		defer close(d)
	}
	parallel(n, func(i int) {
		if err := c.Create(b.Context(), admitted(b, org, pod(i))); err != nil {
			b.Errorf("create: %v", err)
		}
	})
}

// parallel calls f(0) to f(n-1), 64 at once, and returns when all are done.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f(i)
		}()
	}
	wg.Wait()
}

func waitBound(b *testing.B, c client.Client, ns string, n int) []corev1.Pod {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var pods corev1.PodList
		if err := c.List(b.Context(), &pods, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
		bound := pods.Items[:0]
		for _, p := range pods.Items {
			if p.Spec.NodeName != "" {
				bound = append(bound, p)
			}
		}
		if len(bound) == n {
			return bound
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d Pods bound after 5m", len(bound), n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cleanup deletes the namespace's Pods, 64 at once (one DeleteCollection
// of thousands of Pods outlives its request timeout here), and waits until
// they are gone, so the next round starts on empty nodes.
func cleanup(b *testing.B, c client.Client, ns string) {
	ctx := context.WithoutCancel(b.Context())
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		b.Fatal(err)
	}
	parallel(len(pods.Items), func(i int) {
		if err := c.Delete(ctx, &pods.Items[i], client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
			b.Errorf("delete Pod %s: %v", pods.Items[i].Name, err)
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if err := c.List(ctx, &pods, client.InNamespace(ns)); err == nil && len(pods.Items) == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Fatalf("Pods of %s still there 2m after their deletion", ns)
}

// quiet waits, for up to 30 s, until no scheduler has used more than 5% of
// a core over the last half second: each one's informers take in the
// deletions of the Pods just placed, whichever scheduler placed them, and
// a round that started meanwhile would share the machine with them.
func quiet(b *testing.B, scheds map[string]*framework.Process) {
	const window = 500 * time.Millisecond
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		before := map[string]float64{}
		for name, p := range scheds {
			before[name] = cpuSeconds(b, p.PID())
		}
		time.Sleep(window)
		busy := false
		for name, p := range scheds {
			if cpuSeconds(b, p.PID())-before[name] > 0.05*window.Seconds() {
				busy = true
			}
		}
		if !busy {
			return
		}
	}
	b.Logf("the schedulers were still busy 30 s after a round's cleanup")
}

func nodeCount(b *testing.B, c client.Client) int {
	var nodes corev1.NodeList
	if err := c.List(b.Context(), &nodes); err != nil {
		b.Fatal(err)
	}
	return len(nodes.Items)
}

// admitted is pod as berth's mutating webhook writes it for org, with the
// AKS placement keys and the Pod's own schedulerName. Builds are mutated
// here because berth admits a build Pod only from a build Job, and kwok
// completes a Job's Pods at once.
func admitted(b *testing.B, org *berthv1alpha1.Organization, pod *corev1.Pod) *corev1.Pod {
	keys, err := placement.Preset(placement.PresetAKS)
	if err != nil {
		b.Fatal(err)
	}
	class, ok := berthv1alpha1.ParseClass(pod.Labels[berthv1alpha1.LabelClass])
	if !ok {
		b.Fatalf("Pod %s has no berth class", pod.Name)
	}
	webhooks.MutatePod(&pod.ObjectMeta, &pod.Spec, webhooks.Target{Class: class, Org: org, Config: webhooks.Config{Keys: keys}})
	return pod
}
