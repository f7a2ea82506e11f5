// Package demo runs berth's main job on the local cluster: it submits plain,
// labelled workloads, as developers would, and reports where they landed.
package demo

import (
	"context"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/testutil"
)

// Namespace and Org are the demo's tenant.
const (
	Namespace = "berth-demo"
	Org       = "demo"
)

// Run creates the demo Organization and namespace, submits a labelled build
// Job, waits until it completes and prints where its Pod ran.
func Run(ctx context.Context, cl client.Client, out io.Writer) error {
	org := testutil.Org(Org).MaxWorkspaces(300).MaxConcurrentBuilds(50).MaxGPUs(16).Obj()
	if err := createIfMissing(ctx, cl, org); err != nil {
		return err
	}
	if err := createIfMissing(ctx, cl, testutil.Namespace(Namespace).Org(Org).Obj()); err != nil {
		return err
	}
	name := fmt.Sprintf("build-%d", time.Now().Unix())
	job := testutil.Job(name).Namespace(Namespace).Class(berthv1alpha1.ClassBuild).
		User("demo").Project("hello").Resource(corev1.ResourceCPU, "1").Resource(corev1.ResourceMemory, "2Gi").Obj()
	if err := cl.Create(ctx, job); err != nil {
		return fmt.Errorf("submit job %s: %w", name, err)
	}
	fmt.Fprintf(out, "submitted Job %s/%s (berth.dev/class=build)\n", Namespace, name)
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got := &batchv1.Job{}
		if err := cl.Get(ctx, client.ObjectKeyFromObject(job), got); err != nil {
			return false, err
		}
		return got.Status.Succeeded > 0, nil
	})
	if err != nil {
		return fmt.Errorf("wait for Job %s to complete: %w", name, err)
	}
	return printPlacement(ctx, cl, out)
}

func createIfMissing(ctx context.Context, cl client.Client, obj client.Object) error {
	if err := cl.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create %T %s: %w", obj, obj.GetName(), err)
	}
	return nil
}

// printPlacement prints, per pool, the demo's Pods that landed there.
func printPlacement(ctx context.Context, cl client.Client, out io.Writer) error {
	var pods corev1.PodList
	if err := cl.List(ctx, &pods, client.InNamespace(Namespace)); err != nil {
		return err
	}
	var nodes corev1.NodeList
	if err := cl.List(ctx, &nodes); err != nil {
		return err
	}
	pool := map[string]string{}
	for _, n := range nodes.Items {
		pool[n.Name] = n.Labels[localcluster.LabelPool]
	}
	sort.Slice(pods.Items, func(i, j int) bool { return pods.Items[i].Name < pods.Items[j].Name })
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tCLASS\tPHASE\tNODE\tPOOL")
	for _, p := range pods.Items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Name, p.Labels[berthv1alpha1.LabelClass], p.Status.Phase, p.Spec.NodeName, pool[p.Spec.NodeName])
	}
	return tw.Flush()
}
