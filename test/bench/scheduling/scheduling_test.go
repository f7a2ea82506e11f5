package scheduling

import (
	"context"
	"fmt"
	"sort"
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

// env is the package's cluster with berth-scheduler running beside the
// stock kube-scheduler. No webhook runs: each Pod is created as berth's
// webhook writes it (see admitted), keeping its schedulerName, so both
// schedulers get the same Pods and admission adds no load.
func setup(b *testing.B) (*framework.ClusterEnv, client.Client) {
	env := framework.Cluster(b)
	framework.StartScheduler(b, env, nil)
	cfg := *env.Config
	cfg.QPS, cfg.Burst = 5000, 5000
	c, err := client.New(&cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	return env, c
}

// BenchmarkSchedulingThroughput gives each scheduler the same 2,000 labelled
// workspace Pods, alternating over rounds, and reports pods/s (first to last
// binding) for each, their medians and the ratio.
func BenchmarkSchedulingThroughput(b *testing.B) {
	env, c := setup(b)
	org := testutil.Org("throughput").Obj()
	env.Create(b, org)
	const pods, rounds = 2000, 3
	rates := map[string][]float64{}
	for r := range rounds * b.N {
		for _, sched := range []string{stock, berth} {
			ns := env.Namespace(b, org.Name)
			rate := throughput(b, c, org, ns, sched, pods)
			rates[sched] = append(rates[sched], rate)
			b.Logf("round %d %-18s %6.0f pods/s", r, sched, rate)
			cleanup(b, c, ns)
		}
	}
	s, bt := median(rates[stock]), median(rates[berth])
	b.ReportMetric(s, "pods/s-stock")
	b.ReportMetric(bt, "pods/s-berth")
	b.ReportMetric(bt/s, "ratio")
	b.Logf("scheduling %d Pods on %d nodes: stock median %.0f pods/s, berth-scheduler median %.0f pods/s, ratio %.2f (target >= 0.9)",
		pods, nodeCount(b, c), s, bt, bt/s)
}

// throughput creates n Pods for sched and measures the binding rate, from
// the first Pod seen bound to the last, polling every 50 ms.
func throughput(b *testing.B, c client.Client, org *berthv1alpha1.Organization, ns, sched string, n int) float64 {
	done := make(chan struct{})
	go create(b, c, org, n, func(i int) *corev1.Pod {
		return testutil.Pod(fmt.Sprintf("p-%05d", i)).Namespace(ns).Class(berthv1alpha1.ClassWorkspace).
			SchedulerName(sched).Resource(corev1.ResourceCPU, "100m").Resource(corev1.ResourceMemory, "256Mi").Obj()
	}, done)
	var first, last time.Time
	firstCount := 0
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var pods corev1.PodList
		if err := c.List(b.Context(), &pods, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
		bound := 0
		for _, p := range pods.Items {
			if p.Spec.NodeName != "" {
				bound++
			}
		}
		now := time.Now()
		if bound > 0 && first.IsZero() {
			first, firstCount = now, bound
		}
		if bound == n {
			last = now
			break
		}
		if now.After(deadline) {
			b.Fatalf("%s bound %d of %d Pods in 5m", sched, bound, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	<-done
	return float64(n-firstCount) / last.Sub(first).Seconds()
}

// BenchmarkReferenceLoad places docs/design.md's reference load (300 workspaces,
// 50 builds, 8 vLLM replicas), as berth's webhook mutates it, with each
// scheduler in turn, and reports nodes used against the bin-packing lower
// bound, and the share of workspaces and builds on spot nodes.
func BenchmarkReferenceLoad(b *testing.B) {
	env, c := setup(b)
	org := testutil.Org("reference").Obj()
	env.Create(b, org)
	pools, err := localcluster.DefaultPools()
	if err != nil {
		b.Fatal(err)
	}
	load := demo.ReferenceLoad(1)
	lb := lowerBound(load, pools)
	for _, sched := range []string{stock, berth} {
		ns := env.Namespace(b, org.Name)
		create(b, c, org, len(load), func(i int) *corev1.Pod {
			p := load[i].DeepCopy()
			p.Namespace, p.Spec.SchedulerName = ns, sched
			return p
		})
		placed := waitBound(b, c, ns, len(load))
		used, spot := NodesUsed(b.Context(), b, c, placed)
		b.ReportMetric(float64(used), "nodes-"+sched)
		b.ReportMetric(float64(used)/float64(lb), "x-lower-bound-"+sched)
		b.ReportMetric(spot, "spot-share-"+sched)
		b.Logf("%-18s %d nodes for the reference load, lower bound %d: %.2fx (target <= 1.10x for berth); %.0f%% of workspaces and builds on spot",
			sched, used, lb, float64(used)/float64(lb), 100*spot)
		cleanup(b, c, ns)
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
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := c.Create(b.Context(), admitted(b, org, pod(i))); err != nil {
				b.Errorf("create: %v", err)
			}
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

func cleanup(b *testing.B, c client.Client, ns string) {
	if err := c.DeleteAllOf(context.WithoutCancel(b.Context()), &corev1.Pod{}, client.InNamespace(ns), client.GracePeriodSeconds(0)); err != nil {
		b.Logf("delete Pods in %s: %v", ns, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		var pods corev1.PodList
		if err := c.List(context.WithoutCancel(b.Context()), &pods, client.InNamespace(ns)); err == nil && len(pods.Items) == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func nodeCount(b *testing.B, c client.Client) int {
	var nodes corev1.NodeList
	if err := c.List(b.Context(), &nodes); err != nil {
		b.Fatal(err)
	}
	return len(nodes.Items)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
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
