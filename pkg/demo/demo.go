// Package demo runs berth's main job on the local cluster: it submits the
// reference load of docs/design.md as plain labelled Pods and Jobs, as
// developers would, and reports where it landed, per pool, against the
// bin-packing lower bound, with an hourly cost next to the same load placed
// by the stock scheduler on on-demand nodes. Then the evening comes: berth
// stops the idle workspaces, and the demo prints the nodes emptied and the
// cost of a day.
package demo

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/metering"
	"berth.dev/berth/pkg/placement"
	"berth.dev/berth/pkg/store"
	"berth.dev/berth/pkg/testutil"
)

// The demo's tenant and namespaces.
const (
	Org            = "demo"
	Namespace      = "berth-demo"
	StockNamespace = "berth-demo-stock"
)

// Options configure Run.
type Options struct {
	Pools *localcluster.Pools
	Keys  placement.Keys
	Seed  int64
	Out   io.Writer
	// DatabaseURL, when set, is berth-meter's database: the demo ends with
	// the usage and cost it recorded, per org and class.
	DatabaseURL string
	// Autoscaled says an autoscaler (Karpenter) launches and removes the
	// nodes: the demo then starts with none, waits for nodes to come
	// while Pods wait, and prints what was launched and removed.
	Autoscaled bool
}

// Run places the reference load first as a cluster without berth would (plain
// Pods, stock scheduler), then with berth, and prints both. berth-manager and
// berth-scheduler must be running. The berth placement is left in place.
func Run(ctx context.Context, cl client.Client, o Options) error {
	org := testutil.Org(Org).MaxWorkspaces(Workspaces).MaxConcurrentBuilds(Builds).MaxGPUs(2 * VLLM).Obj()
	for _, obj := range []client.Object{org, testutil.Namespace(Namespace).Org(Org).Obj(), testutil.Namespace(StockNamespace).Obj()} {
		if err := cl.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %T %s: %w", obj, obj.GetName(), err)
		}
	}
	for _, ns := range []string{Namespace, StockNamespace} {
		if err := clearNamespace(ctx, cl, ns); err != nil {
			return err
		}
	}
	load := ReferenceLoad(o.Seed)
	fmt.Fprintf(o.Out, "reference load: %d workspaces, %d builds, %d vLLM replicas of 2 GPUs\n\n", Workspaces, Builds, VLLM)

	fmt.Fprintln(o.Out, "placing it as a cluster without berth would: plain Pods, stock kube-scheduler ...")
	for _, p := range load {
		build := p.Labels[berthv1alpha1.LabelClass] == string(berthv1alpha1.ClassBuild)
		p = Plain(p, o.Keys)
		p.Namespace = StockNamespace
		var obj client.Object = p
		if build {
			obj = AsJob(p)
		}
		if err := cl.Create(ctx, obj); err != nil {
			return fmt.Errorf("create %s: %w", p.Name, err)
		}
	}
	pending := waitBound(ctx, cl, StockNamespace, len(load), o.Autoscaled)
	stock, err := summarize(ctx, cl, StockNamespace, o.Pools, pending, false)
	if err != nil {
		return err
	}
	if err := launched(ctx, cl, o); err != nil {
		return err
	}
	if err := clearNamespace(ctx, cl, StockNamespace); err != nil {
		return err
	}
	if err := removed(ctx, cl, o, nil); err != nil {
		return err
	}

	fmt.Fprintln(o.Out, "placing it with berth: labelled Pods and Jobs, berth's webhooks and berth-scheduler ...")
	for _, p := range load {
		p = p.DeepCopy()
		p.Namespace = Namespace
		var obj client.Object = p
		if p.Labels[berthv1alpha1.LabelClass] == string(berthv1alpha1.ClassBuild) {
			obj = AsJob(p)
		}
		if err := cl.Create(ctx, obj); err != nil {
			return fmt.Errorf("create %s: %w", p.Name, err)
		}
	}
	pending = waitBound(ctx, cl, Namespace, len(load), o.Autoscaled)
	berth, err := summarize(ctx, cl, Namespace, o.Pools, pending, true)
	if err != nil {
		return err
	}
	if err := launched(ctx, cl, o); err != nil {
		return err
	}
	fmt.Fprintln(o.Out)
	report(o.Out, "stock kube-scheduler, on-demand prices", stock)
	fmt.Fprintln(o.Out)
	report(o.Out, "berth", berth)
	fmt.Fprintf(o.Out, "\nhourly cost: berth $%.2f, stock on demand $%.2f: %.0f%% less\n",
		berth.cost, stock.cost, 100*(1-berth.cost/stock.cost))
	if err := day(ctx, cl, o, berth, stock); err != nil {
		return err
	}
	if o.DatabaseURL != "" {
		if err := usage(ctx, cl, o); err != nil {
			return err
		}
	}
	fmt.Fprintf(o.Out, "\nthe berth placement stays: kubectl get pods -n %s -o wide; kubectl get orgs\n", Namespace)
	return nil
}

// usage waits until berth-meter has charged as many of the demo's Pods as
// run, then prints what PostgreSQL holds per org and class.
func usage(ctx context.Context, cl client.Client, o Options) error {
	pool, err := store.Open(ctx, o.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	fmt.Fprintln(o.Out, "\nwaiting for berth-meter to charge the running Pods ...")
	err = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		var pods corev1.PodList
		if err := cl.List(ctx, &pods, client.InNamespace(Namespace), client.HasLabels{berthv1alpha1.LabelClass}); err != nil {
			return false, nil
		}
		// Builds finish at once on kwok's nodes: only running Pods use
		// anything.
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		var charged int
		if err := pool.QueryRow(ctx, "SELECT count(DISTINCT uid) FROM usage_intervals WHERE namespace = $1", Namespace).Scan(&charged); err != nil {
			return false, nil
		}
		return running > 0 && charged >= running, nil
	})
	if err != nil {
		return fmt.Errorf("berth-meter did not charge the demo's Pods: %w", err)
	}
	now := time.Now()
	fmt.Fprintf(o.Out, "\nusage and cost recorded by berth-meter in PostgreSQL, org %s, so far:\n", Org)
	totals, err := metering.Totals(ctx, pool, metering.UsageQuery{Org: Org, By: "class", Since: now.Add(-time.Hour), Until: now.Add(time.Hour)})
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "CLASS	POD-SECONDS	CPU CORE-SECONDS	GPU-SECONDS	$ SPOT	$ ON DEMAND	")
	for _, t := range totals {
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.4f\t%.4f\t\n", t.Key, t.RunningSeconds, t.CPUCoreSeconds, t.GPUSeconds, t.SpotCostDollars, t.OnDemandCostDollars)
	}
	_ = tw.Flush()
	fmt.Fprintln(o.Out, "(the same through the API: GET /v1/usage?org=demo&by=class; berth-meter charges in 5 s intervals here, 1 min by default)")
	return nil
}

type poolRow struct {
	pool                    string
	pods, nodes, lowerBound int
	price, cost             float64
}

type summary struct {
	rows    []poolRow
	pending int
	cost    float64
	// done counts finished Pods (builds) per pool; they hold no node.
	done map[string]int
}

// summarize groups the namespace's Pods by the pool of their node; spot
// decides whether the spot price applies to spot pools.
func summarize(ctx context.Context, cl client.Client, ns string, pools *localcluster.Pools, pending int, spot bool) (summary, error) {
	var pods corev1.PodList
	if err := cl.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		return summary{}, err
	}
	var nodes corev1.NodeList
	if err := cl.List(ctx, &nodes); err != nil {
		return summary{}, err
	}
	poolOf := map[string]string{}
	for _, n := range nodes.Items {
		poolOf[n.Name] = n.Labels[localcluster.LabelPool]
	}
	byPool := map[string][]*corev1.Pod{}
	used := map[string]map[string]bool{}
	s := summary{pending: pending, done: map[string]int{}}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.NodeName == "" {
			continue
		}
		pool := poolOf[p.Spec.NodeName]
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			s.done[pool]++
			continue
		}
		byPool[pool] = append(byPool[pool], p)
		if used[pool] == nil {
			used[pool] = map[string]bool{}
		}
		used[pool][p.Spec.NodeName] = true
	}
	for _, name := range pools.Names() {
		if len(byPool[name]) == 0 {
			continue
		}
		pool, _ := pools.Get(name)
		price := pool.Price.OnDemand
		if spot && pool.Labels["kubernetes.azure.com/scalesetpriority"] == "spot" {
			price = pool.Price.Spot
		}
		r := poolRow{pool: name, pods: len(byPool[name]), nodes: len(used[name]), lowerBound: LowerBound(byPool[name], pool), price: price}
		r.cost = float64(r.nodes) * price
		s.cost += r.cost
		s.rows = append(s.rows, r)
	}
	return s, nil
}

func report(w io.Writer, title string, s summary) {
	fmt.Fprintf(w, "%s:\n", title)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "POOL\tRUNNING PODS\tNODES USED\tLOWER BOUND\tRATIO\t$/NODE-HOUR\t$/HOUR\t")
	var pods, nodes, lb int
	for _, r := range s.rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.2fx\t%.3f\t%.2f\t\n", r.pool, r.pods, r.nodes, r.lowerBound, float64(r.nodes)/float64(max(1, r.lowerBound)), r.price, r.cost)
		pods, nodes, lb = pods+r.pods, nodes+r.nodes, lb+r.lowerBound
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t%d\t%.2fx\t\t%.2f\t\n", pods, nodes, lb, float64(nodes)/float64(max(1, lb)), s.cost)
	_ = tw.Flush()
	for pool, n := range s.done {
		if pool == "" {
			fmt.Fprintf(w, "%d builds ran and finished on nodes removed since\n", n)
			continue
		}
		fmt.Fprintf(w, "%d builds ran on %s nodes and finished\n", n, pool)
	}
	if s.pending > 0 {
		fmt.Fprintf(w, "%d Pods found no node\n", s.pending)
	}
}

// waitBound waits until n Pods of the namespace are bound, or until they
// stop making progress for 10 s (a minute when an autoscaler may still be
// launching nodes for them); it returns how many are not.
func waitBound(ctx context.Context, cl client.Client, ns string, n int, autoscaled bool) int {
	last, still, patience := -1, 0, 20
	if autoscaled {
		patience = 120
	}
	bound := 0
	_ = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		var pods corev1.PodList
		if err := cl.List(ctx, &pods, client.InNamespace(ns)); err != nil {
			return false, nil
		}
		bound = 0
		for _, p := range pods.Items {
			if p.Spec.NodeName != "" {
				bound++
			}
		}
		if bound == last {
			still++
		} else {
			last, still = bound, 0
		}
		return bound >= n || still > patience, nil
	})
	return n - bound
}

// clearNamespace deletes the namespace's Pods and Jobs and waits until they are gone.
func clearNamespace(ctx context.Context, cl client.Client, ns string) error {
	bg := client.PropagationPolicy("Background")
	if err := cl.DeleteAllOf(ctx, &berthv1alpha1.Workspace{}, client.InNamespace(ns), bg); err != nil {
		return fmt.Errorf("delete Workspaces in %s: %w", ns, err)
	}
	if err := cl.DeleteAllOf(ctx, &batchv1.Job{}, client.InNamespace(ns), bg); err != nil {
		return fmt.Errorf("delete Jobs in %s: %w", ns, err)
	}
	if err := cl.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns), client.GracePeriodSeconds(0)); err != nil {
		return fmt.Errorf("delete Pods in %s: %w", ns, err)
	}
	return wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		var pods corev1.PodList
		err := cl.List(ctx, &pods, client.InNamespace(ns))
		return err == nil && len(pods.Items) == 0, nil
	})
}

// launched prints, when an autoscaler runs, the nodes it has launched, per
// pool.
func launched(ctx context.Context, cl client.Client, o Options) error {
	if !o.Autoscaled {
		return nil
	}
	byPool, err := nodesByPool(ctx, cl)
	if err != nil {
		return err
	}
	var parts []string
	for _, name := range o.Pools.Names() {
		parts = append(parts, fmt.Sprintf("%d %s", len(byPool[name]), name))
	}
	fmt.Fprintf(o.Out, "Karpenter launched %s nodes for it\n", strings.Join(parts, ", "))
	return nil
}

// removed waits, when an autoscaler runs, until it has removed the nodes
// named, or every node when names is nil, and prints how many and how
// long it took.
func removed(ctx context.Context, cl client.Client, o Options, names []string) error {
	if !o.Autoscaled {
		return nil
	}
	start := time.Now()
	left := 0
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		var nodes corev1.NodeList
		if err := cl.List(ctx, &nodes); err != nil {
			return false, nil
		}
		left = 0
		for _, n := range nodes.Items {
			if names == nil || slices.Contains(names, n.Name) {
				left++
			}
		}
		return left == 0, nil
	})
	if err != nil {
		return fmt.Errorf("%d nodes still there 10 minutes after they emptied; the karpenter component's log says why: %w", left, err)
	}
	what := "every node"
	if names != nil {
		what = fmt.Sprintf("the %d emptied nodes", len(names))
	}
	fmt.Fprintf(o.Out, "Karpenter removed %s in %s\n", what, time.Since(start).Round(time.Second))
	return nil
}

// nodesByPool groups the cluster's nodes by their pool label.
func nodesByPool(ctx context.Context, cl client.Client) (map[string][]string, error) {
	var nodes corev1.NodeList
	if err := cl.List(ctx, &nodes); err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, n := range nodes.Items {
		out[n.Labels[localcluster.LabelPool]] = append(out[n.Labels[localcluster.LabelPool]], n.Name)
	}
	return out, nil
}
