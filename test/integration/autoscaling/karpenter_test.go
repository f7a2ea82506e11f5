package autoscaling

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

const (
	workspaces = 12 // the org's maxWorkspaces; one more is asked for
	builds     = 4  // two run at once, the org's maxConcurrentBuilds
	inference  = 2  // vLLM Pods of 2 GPUs each
)

// From a cluster with no worker node, berth's Pods get the nodes they need:
// Karpenter launches them from the Pods as berth's webhooks wrote them, and
// berth-scheduler places every Pod on them. Work berth holds back (queued
// builds, a workspace over quota) has no Pod, and no node is launched for
// it. When the workspaces stop and the builds end, Karpenter removes the
// nodes berth emptied; the GPU node goes when vLLM does.
func TestKarpenterLaunchesWhatBerthPlacesAndRemovesWhatItEmpties(t *testing.T) {
	env := framework.Cluster(t)
	manager := framework.StartManager(t, env, framework.ManagerOptions{
		Args: []string{"--controllers=orgstatus,buildqueue,workspaces"},
	})
	framework.StartScheduler(t, env, nil)
	karpenter := framework.StartKarpenter(t, env, localcluster.KarpenterQuickConsolidation("10s"))
	org := testutil.Org("team").MaxWorkspaces(workspaces).MaxConcurrentBuilds(2).Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Karpenter's log ends:\n%s\nberth-manager's log ends:\n%s", karpenter.Tail(40), manager.Tail(30))
			logState(t, env, ns)
		}
	})

	start := time.Now()
	for i := range workspaces + 1 {
		env.Create(t, workspace(ns, fmt.Sprintf("ide-%02d", i)))
	}
	for i := range builds {
		job := testutil.Job(fmt.Sprintf("build-%d", i)).Namespace(ns).Class(berthv1alpha1.ClassBuild).
			Resource(corev1.ResourceCPU, "4").Resource(corev1.ResourceMemory, "8Gi").Obj()
		// The first two builds must still run when the checks below look
		// at the queue, on a machine busy with other tests too.
		job.Spec.Template.Annotations = map[string]string{localcluster.AnnotationRunFor: "90s"}
		env.Create(t, job)
	}
	for i := range inference {
		env.Create(t, testutil.Pod(fmt.Sprintf("vllm-%d", i)).Namespace(ns).Class(berthv1alpha1.ClassInference).
			Resource(corev1.ResourceCPU, "8").Resource(corev1.ResourceMemory, "64Gi").Resource("nvidia.com/gpu", "2").Obj())
	}

	// Every Pod berth admitted runs.
	framework.Eventually(t, 4*time.Minute, "every admitted Pod running", func(ctx context.Context) (bool, error) {
		pods, err := berthPods(ctx, env, ns)
		if err != nil {
			return false, err
		}
		running := map[berthv1alpha1.Class]int{}
		for _, p := range pods {
			if p.Status.Phase == corev1.PodRunning {
				running[berthv1alpha1.Class(p.Labels[berthv1alpha1.LabelClass])]++
			}
		}
		return running[berthv1alpha1.ClassWorkspace] == workspaces && running[berthv1alpha1.ClassBuild] == 2 &&
			running[berthv1alpha1.ClassInference] == inference, nil
	})
	morning := time.Since(start)

	// The workspace over quota is stopped, refused; the others' status
	// follows their Pods. The queued builds have no Pods.
	var list berthv1alpha1.WorkspaceList
	framework.Eventually(t, time.Minute, "12 Workspaces Running and one refused", func(ctx context.Context) (bool, error) {
		if err := env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		runningWS, refused := 0, 0
		for _, ws := range list.Items {
			switch {
			case ws.Status.Phase == berthv1alpha1.WorkspaceRunning:
				runningWS++
			case ws.Status.Phase == berthv1alpha1.WorkspaceStopped && meta.IsStatusConditionTrue(ws.Status.Conditions, "StartFailed"):
				refused++
			}
		}
		return runningWS == workspaces && refused == 1, nil
	})
	var jobs batchv1.JobList
	require.NoError(t, env.Client.List(t.Context(), &jobs, client.InNamespace(ns)))
	queued := 0
	for _, j := range jobs.Items {
		if j.Spec.Suspend != nil && *j.Spec.Suspend {
			queued++
		}
	}
	assert.Equal(t, builds-2, queued, "builds past maxConcurrentBuilds wait in berth's queue")

	// No node is launched for what berth holds back: a Karpenter batch
	// window later, every node still runs a berth Pod.
	launched := nodeClaims(t, env)
	time.Sleep(15 * time.Second)
	assert.Equal(t, launched, nodeClaims(t, env), "no node launched while only held-back work waits")
	peak := snap(t, env, ns)
	framework.Report(t, "Karpenter launched, for %d workspaces, 2 builds and %d vLLM Pods: %s (every Pod ran %s after the first create)",
		workspaces, inference, peak, morning.Round(time.Second))
	pods, err := berthPods(t.Context(), env, ns)
	require.NoError(t, err)
	busy := map[string]bool{}
	for _, p := range pods {
		busy[p.Spec.NodeName] = true
	}
	var nodes corev1.NodeList
	require.NoError(t, env.Client.List(t.Context(), &nodes))
	for _, n := range nodes.Items {
		assert.True(t, busy[n.Name], "node %s of pool %s runs a berth Pod", n.Name, n.Labels[localcluster.LabelPool])
	}

	// The load shrinks: the workspaces stop and the builds, queued ones
	// included, run to their end.
	for _, ws := range list.Items {
		patch := client.RawPatch(client.Merge.Type(), []byte(`{"spec":{"started":false}}`))
		require.NoError(t, env.Client.Patch(t.Context(), &ws, patch))
	}
	framework.Eventually(t, 7*time.Minute, "every build complete", func(ctx context.Context) (bool, error) {
		var jobs batchv1.JobList
		if err := env.Client.List(ctx, &jobs, client.InNamespace(ns)); err != nil {
			return false, err
		}
		done := 0
		for _, j := range jobs.Items {
			if j.Status.Succeeded > 0 {
				done++
			}
		}
		return done == builds, nil
	})
	framework.Eventually(t, 3*time.Minute, "the emptied nodes removed, the GPU node kept", func(ctx context.Context) (bool, error) {
		byPool, err := env.NodesByPool(ctx)
		return len(byPool["spot-ssd"]) == 0 && len(byPool["on-demand"]) == 0 && len(byPool["gpu"]) == 1, err
	})

	// vLLM goes, and its node with it.
	require.NoError(t, env.Client.DeleteAllOf(t.Context(), &corev1.Pod{}, client.InNamespace(ns),
		client.MatchingLabels{berthv1alpha1.LabelClass: string(berthv1alpha1.ClassInference)}, client.GracePeriodSeconds(0)))
	framework.Eventually(t, 3*time.Minute, "no node left", func(ctx context.Context) (bool, error) {
		var nodes corev1.NodeList
		err := env.Client.List(ctx, &nodes)
		return len(nodes.Items) == 0, err
	})
	framework.Report(t, "Karpenter removed all %d nodes once the workspaces stopped, the builds ended and vLLM went", peak.total())
}

// workspace is a started Workspace of 2 CPUs and 8Gi.
func workspace(ns, name string) *berthv1alpha1.Workspace {
	pod := testutil.Pod(name).Class(berthv1alpha1.ClassWorkspace).User("ana").
		Resource(corev1.ResourceCPU, "2").Resource(corev1.ResourceMemory, "8Gi").Obj()
	return &berthv1alpha1.Workspace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: berthv1alpha1.WorkspaceSpec{Started: true, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels},
			Spec:       pod.Spec,
		}},
	}
}

// berthPods lists the namespace's labelled Pods that have not finished.
func berthPods(ctx context.Context, env *framework.ClusterEnv, ns string) ([]corev1.Pod, error) {
	var list corev1.PodList
	if err := env.Client.List(ctx, &list, client.InNamespace(ns), client.HasLabels{berthv1alpha1.LabelClass}); err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed && p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// nodeClaims lists the names of Karpenter's NodeClaims.
func nodeClaims(t *testing.T, env *framework.ClusterEnv) []string {
	t.Helper()
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion("karpenter.sh/v1")
	list.SetKind("NodeClaimList")
	require.NoError(t, env.Client.List(t.Context(), list))
	var names []string
	for _, o := range list.Items {
		names = append(names, o.GetName())
	}
	return names
}

// A build is never held off a node Karpenter sees room on. berth-scheduler
// here expects each build to write more than any node's disk
// (buildScratchBytes), while the build asks for the org's scratch request.
// Karpenter launches a node for the request; berth-scheduler must place the
// build there, as its resource fit, which is the autoscaler's, allows. A
// count of its own would leave the build Pending, with no node to come.
func TestABuildGoesWhereKarpenterSeesRoom(t *testing.T) {
	env := framework.Cluster(t)
	framework.StartManager(t, env, framework.ManagerOptions{Args: []string{"--controllers=orgstatus,buildqueue"}})
	framework.StartScheduler(t, env, func(cfg map[string]any) {
		placementArgs(t, cfg)["buildScratchBytes"] = 4000 << 30
	})
	karpenter := framework.StartKarpenter(t, env, localcluster.KarpenterQuickConsolidation("10s"))
	org := testutil.Org("builders").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Karpenter's log ends:\n%s", karpenter.Tail(20))
			logState(t, env, ns)
		}
	})
	job := testutil.Job("build").Namespace(ns).Class(berthv1alpha1.ClassBuild).
		Resource(corev1.ResourceCPU, "4").Resource(corev1.ResourceMemory, "8Gi").Obj()
	job.Spec.Template.Annotations = map[string]string{localcluster.AnnotationRunFor: "20s"}
	env.Create(t, job)

	framework.Eventually(t, 3*time.Minute, "the build complete", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(job), job)
		return job.Status.Succeeded == 1, err
	})
}

// placementArgs is BerthPlacement's args in a scheduler configuration.
func placementArgs(t *testing.T, cfg map[string]any) map[string]any {
	t.Helper()
	for _, p := range cfg["profiles"].([]any) {
		for _, pc := range p.(map[string]any)["pluginConfig"].([]any) {
			if pc := pc.(map[string]any); pc["name"] == "BerthPlacement" {
				return pc["args"].(map[string]any)
			}
		}
	}
	t.Fatal("no BerthPlacement args in the scheduler's configuration")
	return nil
}

// logState logs, for a failure, the nodes and where the namespace's Pods
// are, with why a Pending one is not placed.
func logState(t *testing.T, env *framework.ClusterEnv, ns string) {
	ctx := context.Background()
	var nodes corev1.NodeList
	if err := env.Client.List(ctx, &nodes); err == nil {
		for _, n := range nodes.Items {
			t.Logf("node %s: pool %q, taints %v", n.Name, n.Labels[localcluster.LabelPool], n.Spec.Taints)
		}
	}
	var pods corev1.PodList
	if err := env.Client.List(ctx, &pods, client.InNamespace(ns)); err == nil {
		for _, p := range pods.Items {
			why := ""
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
					why = c.Message
				}
			}
			t.Logf("Pod %s: %s on %q %s", p.Name, p.Status.Phase, p.Spec.NodeName, why)
		}
	}
}
