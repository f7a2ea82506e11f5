package autoscaling

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/demo"
	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/placement"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// The day's load, and the schedulers it runs with.
const (
	dayWorkspaces = 40
	dayBuilds     = 8
	dayVLLM       = 2 // replicas of 2 GPUs
	waves         = 3 // the load arrives in waves, 10 s apart
	stock         = "default-scheduler"
	berth         = "berth-scheduler"
)

// The same day on a cluster Karpenter scales, on the same NodePools
// (manifests/karpenter), without berth and then with it. Without: the Pods
// plain (no labels, so nothing of berth's) on the stock scheduler, as `make
// demo`'s stock cluster. With: labelled Pods and Jobs through berth's
// webhooks and berth-scheduler. The morning: workspaces of 1 or 2 CPU,
// builds and vLLM arrive in waves, and Karpenter launches nodes as they
// wait. The evening: the first half of the workspaces stop, the builds
// end, and Karpenter removes the nodes left empty. It reports, at the peak and in
// the evening, the nodes of each pool against the packing lower bound of
// the Pods that run, and the hourly cost; berth's peak costs less, since
// Karpenter launches spot capacity for what berth admits.
func TestKarpenterCostWithAndWithoutBerth(t *testing.T) {
	env := framework.Cluster(t)
	framework.StartManager(t, env, framework.ManagerOptions{Args: []string{"--controllers=orgstatus,buildqueue"}})
	framework.StartScheduler(t, env, nil)
	framework.StartKarpenter(t, env, localcluster.KarpenterQuickConsolidation("10s"))
	org := testutil.Org("day").Obj()
	env.Create(t, org)
	keys, err := placement.Preset(placement.PresetAKS)
	if err != nil {
		t.Fatal(err)
	}
	plain := "plain-day"
	env.Create(t, testutil.Namespace(plain).Obj())

	without := runDay(t, env, plain, stock, 1, keys)
	with := runDay(t, env, env.Namespace(t, org.Name), berth, 1, keys)
	for _, r := range []struct {
		name string
		d    day
	}{{"without berth (plain Pods, stock scheduler)", without}, {"with berth", with}} {
		framework.Report(t, "%s: every Pod ran %s after the first wave; peak %s; evening %s; %d nodes removed after the load shrank",
			r.name, r.d.morning, r.d.peak, r.d.evening, r.d.peak.total()-r.d.evening.total())
	}
	framework.Report(t, "berth against without: peak %.2fx, evening %.2fx the hourly cost",
		with.peak.cost/without.peak.cost, with.evening.cost/without.evening.cost)
	assert.Less(t, with.peak.cost, without.peak.cost, "with berth, Karpenter launches spot capacity")
}

// day is one round's two snapshots, and how long after the first wave
// every Pod ran.
type day struct {
	peak, evening snapshot
	morning       time.Duration
}

// snapshot is the cluster's nodes at one moment, against the Pods running.
type snapshot struct {
	nodes, lowerBound map[string]int
	cost              float64
}

// total is the number of nodes.
func (s snapshot) total() int {
	n := 0
	for _, c := range s.nodes {
		n += c
	}
	return n
}

func (s snapshot) String() string {
	var parts []string
	for _, pool := range []string{"spot-ssd", "on-demand", "gpu"} {
		parts = append(parts, fmt.Sprintf("%s %d nodes (lower bound %d)", pool, s.nodes[pool], s.lowerBound[pool]))
	}
	return fmt.Sprintf("%s: $%.2f/h", strings.Join(parts, ", "), s.cost)
}

// runDay places the load in ns, with berth or plainly on the stock
// scheduler, and takes it down again until Karpenter has removed every
// node.
func runDay(t *testing.T, env *framework.ClusterEnv, ns, sched string, seed int64, keys placement.Keys) day {
	ctx := t.Context()
	load := dayLoad(seed)
	start := time.Now()
	var submitted []string // the workspaces, in the order they were created
	var builds []*batchv1.Job
	for w := range waves {
		for i, p := range load {
			if i%waves != w {
				continue
			}
			build := p.Labels[berthv1alpha1.LabelClass] == string(berthv1alpha1.ClassBuild)
			if p.Labels[berthv1alpha1.LabelClass] == string(berthv1alpha1.ClassWorkspace) {
				submitted = append(submitted, p.Name)
			}
			if sched == stock {
				p = demo.Plain(p, keys)
			}
			p = p.DeepCopy()
			p.Namespace = ns
			var obj client.Object = p
			if build {
				job := demo.AsJob(p)
				// Running through the peak, however long the morning
				// takes; the evening ends it. A build that ran its
				// course on a timer could end before the last Pod of a
				// slow morning runs, and the peak would never come.
				job.Spec.Template.Annotations = map[string]string{localcluster.AnnotationRunFor: "1h"}
				obj = job
				builds = append(builds, job)
			}
			if err := env.Client.Create(ctx, obj); err != nil {
				t.Fatalf("create %s: %v", p.Name, err)
			}
		}
		time.Sleep(10 * time.Second)
	}
	framework.Eventually(t, 5*time.Minute, sched+": every Pod running", func(ctx context.Context) (bool, error) {
		pods, err := running(ctx, env, ns)
		return len(pods) == len(load), err
	})
	d := day{morning: time.Since(start).Round(time.Second)}
	d.peak = snap(t, env, ns)

	// The evening: the teams of the first half of the workspaces go home,
	// and the builds end.
	for _, name := range submitted[:len(submitted)/2] {
		pod := &corev1.Pod{}
		pod.Namespace, pod.Name = ns, name
		if err := env.Client.Delete(ctx, pod, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
	}
	for _, job := range builds {
		if err := env.Client.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
			t.Fatal(err)
		}
	}
	framework.Eventually(t, 5*time.Minute, sched+": builds over and Karpenter settled", settled(env, ns, dayWorkspaces/2+dayVLLM))
	d.evening = snap(t, env, ns)

	if err := env.Client.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns), client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 5*time.Minute, sched+": every node removed", func(ctx context.Context) (bool, error) {
		var nodes corev1.NodeList
		err := env.Client.List(ctx, &nodes)
		return len(nodes.Items) == 0, err
	})
	return d
}

// dayLoad is the day's Pods, in a seeded order: workspaces and vLLM as the
// reference load has them, and builds, which go in as Jobs.
func dayLoad(seed int64) []*corev1.Pod {
	var ws, bs, inf []*corev1.Pod
	for _, p := range demo.ReferenceLoad(seed) {
		switch berthv1alpha1.Class(p.Labels[berthv1alpha1.LabelClass]) {
		case berthv1alpha1.ClassWorkspace:
			ws = append(ws, p)
		case berthv1alpha1.ClassBuild:
			bs = append(bs, p)
		default:
			inf = append(inf, p)
		}
	}
	load := append(append(ws[:dayWorkspaces], bs[:dayBuilds]...), inf[:dayVLLM]...)
	rand.New(rand.NewSource(seed)).Shuffle(len(load), func(i, j int) { load[i], load[j] = load[j], load[i] })
	return load
}

// running lists the namespace's Pods that run.
func running(ctx context.Context, env *framework.ClusterEnv, ns string) ([]corev1.Pod, error) {
	var list corev1.PodList
	if err := env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// settled reports true once only want Pods run and the cluster's node count
// has not changed for 45 s: Karpenter removes an empty node 10 s after it
// empties, and looks again every few seconds.
func settled(env *framework.ClusterEnv, ns string, want int) func(context.Context) (bool, error) {
	last, since := -1, time.Now()
	return func(ctx context.Context) (bool, error) {
		pods, err := running(ctx, env, ns)
		if err != nil || len(pods) != want {
			return false, err
		}
		var nodes corev1.NodeList
		if err := env.Client.List(ctx, &nodes); err != nil {
			return false, err
		}
		if len(nodes.Items) != last {
			last, since = len(nodes.Items), time.Now()
		}
		return time.Since(since) > 45*time.Second, nil
	}
}

// snap counts the nodes of each pool and prices them, against the packing
// lower bound of the namespace's running Pods on that pool.
func snap(t *testing.T, env *framework.ClusterEnv, ns string) snapshot {
	pods, err := running(t.Context(), env, ns)
	if err != nil {
		t.Fatal(err)
	}
	byPool, err := env.NodesByPool(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	poolOf := map[string]string{}
	for name, nodes := range byPool {
		for _, n := range nodes {
			poolOf[n.Name] = name
		}
	}
	podsOn := map[string][]*corev1.Pod{}
	for i := range pods {
		pool := poolOf[pods[i].Spec.NodeName]
		podsOn[pool] = append(podsOn[pool], &pods[i])
	}
	s := snapshot{nodes: map[string]int{}, lowerBound: map[string]int{}}
	for _, name := range env.Pools.Names() {
		pool, _ := env.Pools.Get(name)
		s.nodes[name] = len(byPool[name])
		s.lowerBound[name] = demo.LowerBound(podsOn[name], pool)
		price := pool.Price.OnDemand
		if name == "spot-ssd" {
			price = pool.Price.Spot
		}
		s.cost += float64(s.nodes[name]) * price
	}
	return s
}
