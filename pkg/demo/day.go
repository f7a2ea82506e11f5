package demo

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// The demo's day: IdleShare of the workspaces, the first ones submitted,
// belong to teams that go home; the rest keep working through the night.
const (
	IdleShare = 0.6
	// DayIdleTimeout stands for the org's 30m: the shortest idleTimeout an
	// Organization accepts.
	DayIdleTimeout = time.Minute
	heartbeatEvery = 15 * time.Second
)

// day runs the evening of the platform on berth's placement: the teams of
// the first 60% of the workspaces stop working, their IDE gateways stop
// sending heartbeats, and berth stops those workspaces after the org's
// idle timeout, keeping their claims. It prints the nodes that emptied
// (with no Pod left of any namespace), the cost per pool before and after,
// and a day of 12 busy hours and 12 night hours against the stock cluster
// running everything for 24.
func day(ctx context.Context, cl client.Client, o Options, busy, stock summary) error {
	var pods corev1.PodList
	if err := cl.List(ctx, &pods, client.InNamespace(Namespace), client.MatchingLabels{berthv1alpha1.LabelClass: string(berthv1alpha1.ClassWorkspace)}); err != nil {
		return err
	}
	var names []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			names = append(names, p.Name)
		}
	}
	sort.Strings(names) // submitted in this order
	idle := int(float64(len(names)) * IdleShare)
	leaving, staying := names[:idle], names[idle:]
	before, err := usedNodes(ctx, cl)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "\nthe evening: the teams of %d workspaces (the first %.0f%% submitted) go home; %d keep working and their IDEs send a heartbeat every %s\n",
		len(leaving), 100*IdleShare, len(staying), heartbeatEvery)

	hbCtx, stopHeartbeats := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { heartbeat(hbCtx, cl, staying) })
	defer func() { stopHeartbeats(); wg.Wait() }()
	// Let the first heartbeats land before the timeout applies.
	time.Sleep(2 * time.Second)
	fmt.Fprintf(o.Out, "setting Organization %s's idleTimeout to %s (30m in production) ...\n", Org, DayIdleTimeout)
	if err := setIdleTimeout(ctx, cl, &metav1.Duration{Duration: DayIdleTimeout}); err != nil {
		return err
	}
	defer func() { _ = setIdleTimeout(context.WithoutCancel(ctx), cl, nil) }()

	start := time.Now()
	err = wait.PollUntilContextTimeout(ctx, 2*time.Second, DayIdleTimeout+3*time.Minute, true, func(ctx context.Context) (bool, error) {
		var list berthv1alpha1.WorkspaceList
		if err := cl.List(ctx, &list, client.InNamespace(Namespace)); err != nil {
			return false, nil
		}
		stopped := 0
		for _, ws := range list.Items {
			if ws.Status.Phase == berthv1alpha1.WorkspaceStopped && ws.Status.StoppedBy == berthv1alpha1.StoppedIdle {
				stopped++
			}
		}
		return stopped >= len(leaving), nil
	})
	if err != nil {
		return fmt.Errorf("berth did not stop the %d idle workspaces: %w", len(leaving), err)
	}
	fmt.Fprintf(o.Out, "berth stopped %d idle workspaces %s after the timeout was set; their claims and templates are kept (kubectl get workspaces -n %s)\n",
		len(leaving), time.Since(start).Round(time.Second), Namespace)

	night, err := summarize(ctx, cl, Namespace, o.Pools, 0, true)
	if err != nil {
		return err
	}
	after, err := usedNodes(ctx, cl)
	if err != nil {
		return err
	}
	var emptied []string
	for n := range before {
		if !after[n] {
			emptied = append(emptied, n)
		}
	}
	sort.Strings(emptied)
	fmt.Fprintf(o.Out, "%d nodes emptied, with no Pod of any namespace left on them: an autoscaler can remove them\n", len(emptied))
	if err := removed(ctx, cl, o, emptied); err != nil {
		return err
	}
	fmt.Fprintln(o.Out)
	report(o.Out, "berth at night", night)
	printDay(o.Out, busy, night, stock)
	return nil
}

// printDay prints the cost of 12 busy and 12 night hours with berth
// against the stock cluster, which keeps every workspace for 24.
func printDay(w io.Writer, busy, night, stock summary) {
	berthDay := 12*busy.cost + 12*night.cost
	stockDay := 24 * stock.cost
	fmt.Fprintf(w, "\na day (12 h busy at $%.2f/h, 12 h at night at $%.2f/h): berth $%.2f; stock on demand, no idle stop $%.2f: %.0f%% less\n",
		busy.cost, night.cost, berthDay, stockDay, 100*(1-berthDay/stockDay))
}

// heartbeat annotates the workspaces' current Pods with
// berth.dev/last-activity until ctx ends, as their IDE gateways would.
func heartbeat(ctx context.Context, cl client.Client, workspaces []string) {
	for {
		now := time.Now().UTC().Format(time.RFC3339)
		for _, name := range workspaces {
			var pods corev1.PodList
			if err := cl.List(ctx, &pods, client.InNamespace(Namespace), client.MatchingLabels{berthv1alpha1.LabelWorkspace: name}); err != nil {
				continue
			}
			for i := range pods.Items {
				p := &pods.Items[i]
				patch := client.MergeFrom(p.DeepCopy())
				metav1.SetMetaDataAnnotation(&p.ObjectMeta, berthv1alpha1.AnnotationLastActivity, now)
				_ = cl.Patch(ctx, p, patch)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(heartbeatEvery):
		}
	}
}

func setIdleTimeout(ctx context.Context, cl client.Client, d *metav1.Duration) error {
	org := &berthv1alpha1.Organization{}
	if err := cl.Get(ctx, client.ObjectKey{Name: Org}, org); err != nil {
		return err
	}
	patch := client.MergeFrom(org.DeepCopy())
	org.Spec.IdleTimeout = d
	if d == nil {
		org.Spec.IdleTimeout = &metav1.Duration{Duration: 30 * time.Minute}
	}
	if err := cl.Patch(ctx, org, patch); err != nil {
		return fmt.Errorf("set idleTimeout of Organization %s: %w", Org, err)
	}
	return nil
}

// usedNodes returns the nodes that hold a Pod of any namespace that has
// not finished.
func usedNodes(ctx context.Context, cl client.Client) (map[string]bool, error) {
	var pods corev1.PodList
	if err := cl.List(ctx, &pods); err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, p := range pods.Items {
		if p.Spec.NodeName != "" && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			used[p.Spec.NodeName] = true
		}
	}
	return used, nil
}
