package chart

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// TestChartUpgradeLosesNothing installs the chart with helm, runs
// berth-manager (with the flags of the release's Deployment, as the chart's
// ServiceAccount) and berth-scheduler, and gives them work: a running
// workspace, a stopped one, one build running and two queued behind the
// org's one build slot. Then berth goes down as a rolling upgrade takes it
// down, `helm upgrade` changes values, and the upgraded manager (with the
// new Deployment's flags) and scheduler come up. Nothing is lost and nothing
// is admitted twice: the Workspaces, their Pod and the Jobs keep their UIDs,
// the stopped workspace stays stopped, the queued builds run one at a time,
// each with one Pod, and the quota still counts the running workspace.
func TestChartUpgradeLosesNothing(t *testing.T) {
	env := framework.Cluster(t)
	root, err := localcluster.RepoRoot(".")
	require.NoError(t, err)
	chart := filepath.Join(root, "charts", "berth")
	ctx := t.Context()
	release := []string{"--namespace", namespace, "--kubeconfig", env.Kubeconfig()}

	helm(t, env, append([]string{"install", "berth", chart, "--create-namespace"}, release...)...)
	t.Cleanup(func() {
		// t.Context() is done by now.
		cmd := exec.Command(env.Tools.Helm, append([]string{"uninstall", "berth", "--wait"}, release...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("helm uninstall: %v: %s", err, out)
		}
	})
	manager, scheduler := startReleased(t, env, release, nil)

	org := testutil.Org("upgrade").MaxWorkspaces(1).MaxConcurrentBuilds(1).Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)
	running := workspace(ns, "ws-running", true)
	stopped := workspace(ns, "ws-stopped", false)
	env.Create(t, running)
	env.Create(t, stopped)
	builds := []string{"build-1", "build-2", "build-3"}
	for _, name := range builds {
		job := testutil.Job(name).Namespace(ns).Class(berthv1alpha1.ClassBuild).Obj()
		job.Spec.Template.Annotations = map[string]string{localcluster.AnnotationRunFor: "20s"}
		env.Create(t, job)
	}

	framework.Eventually(t, 2*time.Minute, "ws-running Running, ws-stopped Stopped, build-1 running and two builds queued", func(ctx context.Context) (bool, error) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(running), running); err != nil {
			return false, err
		}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(stopped), stopped); err != nil {
			return false, err
		}
		got := &berthv1alpha1.Organization{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(org), got); err != nil {
			return false, err
		}
		return running.Status.Phase == berthv1alpha1.WorkspaceRunning && stopped.Status.Phase == berthv1alpha1.WorkspaceStopped &&
			got.Status.RunningBuilds == 1 && got.Status.QueuedBuilds == 2, nil
	})
	before := snapshot(t, env, ns)
	require.Len(t, before.jobs, 3)
	require.NotEmpty(t, running.Status.PodUID)

	// A rolling upgrade replaces berth's Pods: the old ones stop first here,
	// so that none of the upgraded ones can lean on them.
	manager.Stop()
	scheduler.Stop()
	serveThroughService(t, env, release)
	changed := []string{
		"--set", "manager.replicas=2",
		"--set", "manager.logVerbosity=2",
		"--set", "manager.workspaceBusyCPU=500m",
		"--set", "manager.workspaceNodeLossSeconds=45",
		"--set", "scheduler.replicas=1",
		"--set", "networkPolicy.enabled=true",
	}
	upgrade := append(append([]string{"upgrade", "berth", chart}, release...), changed...)
	deploy := &appsv1.Deployment{}

	// Kubernetes cannot change a PriorityClass's value: such an upgrade is
	// refused whole, with the fix, before anything is changed.
	_, stderr, err := helmResult(t, env, append(upgrade, "--set", "priorityClasses.workspace=1500")...)
	require.Error(t, err, "an upgrade changing a PriorityClass's value")
	assert.Contains(t, stderr, "priorityClasses.workspace: 1500, but PriorityClass berth-workspace in the cluster has 1000")
	assert.Contains(t, stderr, "kubectl delete priorityclass berth-workspace")
	require.NoError(t, env.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: "berth-manager"}, deploy))
	assert.Equal(t, int32(3), ptr.Deref(deploy.Spec.Replicas, 0), "the refused upgrade changed nothing")

	helm(t, env, upgrade...)
	require.NoError(t, env.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: "berth-manager"}, deploy))
	assert.Equal(t, int32(2), ptr.Deref(deploy.Spec.Replicas, 0), "the upgrade changed the manager's Deployment")
	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{}
	require.NoError(t, env.Client.Get(ctx, types.NamespacedName{Name: "berth"}, mutating))
	for _, w := range mutating.Webhooks {
		assert.NotEmpty(t, w.ClientConfig.CABundle, "webhook %s keeps the CA berth-manager injected through the upgrade", w.Name)
	}
	var policies unstructured.UnstructuredList
	policies.SetAPIVersion("networking.k8s.io/v1")
	policies.SetKind("NetworkPolicyList")
	require.NoError(t, env.Client.List(ctx, &policies, client.InNamespace(namespace)))
	assert.NotEmpty(t, policies.Items, "the upgrade added the NetworkPolicies")

	manager, scheduler = startReleased(t, env, release, func(args []string) {
		assert.Contains(t, args, "--workspace-busy-cpu=500m", "the upgraded manager runs with the new values")
		assert.Contains(t, args, "--workspace-node-loss-seconds=45")
	})

	// The queue goes on from where it was: every build runs, one at a time.
	waitBuildsSucceeded(t, env, ns, 3, 3*time.Minute)
	after := snapshot(t, env, ns)
	for name, uid := range before.jobs {
		assert.Equal(t, uid, after.jobs[name], "Job %s is the same object", name)
	}
	var jobs batchv1.JobList
	require.NoError(t, env.Client.List(ctx, &jobs, client.InNamespace(ns)))
	slices.SortFunc(jobs.Items, func(a, b batchv1.Job) int { return a.Status.StartTime.Compare(b.Status.StartTime.Time) })
	for i, j := range jobs.Items {
		assert.Equal(t, 1, after.podsOf[j.Name], "Job %s ran one Pod", j.Name)
		if i > 0 {
			prev := jobs.Items[i-1]
			assert.False(t, j.Status.StartTime.Before(prev.Status.CompletionTime),
				"Job %s started at %s, before Job %s completed at %s: two builds ran at once on one slot",
				j.Name, j.Status.StartTime, prev.Name, prev.Status.CompletionTime)
		}
	}

	// The workspaces are as they were.
	for _, ws := range []*berthv1alpha1.Workspace{running, stopped} {
		got := &berthv1alpha1.Workspace{}
		require.NoError(t, env.Client.Get(ctx, client.ObjectKeyFromObject(ws), got))
		assert.Equal(t, ws.UID, got.UID, "Workspace %s is the same object", ws.Name)
		assert.Equal(t, ws.Status.Phase, got.Status.Phase, "Workspace %s keeps its phase", ws.Name)
		assert.Equal(t, ws.Status.PodUID, got.Status.PodUID, "Workspace %s keeps its Pod", ws.Name)
	}
	assert.Equal(t, before.pods[running.Name], after.pods[running.Name], "the running workspace's Pod was not made again")
	assert.NotContains(t, after.pods, stopped.Name, "the stopped workspace has no Pod")

	// The quota still counts the running workspace: another is refused.
	err = env.Client.Create(ctx, testutil.Pod("ws-more").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj())
	require.Error(t, err, "a second workspace is over the org's maxWorkspaces of 1")
	assert.True(t, apierrors.IsForbidden(err), "%v", err)
	framework.Eventually(t, time.Minute, "status.workspaces = 1, no build running or queued", func(ctx context.Context) (bool, error) {
		got := &berthv1alpha1.Organization{}
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(org), got)
		return got.Status.Workspaces == 1 && got.Status.RunningBuilds == 0 && got.Status.QueuedBuilds == 0, err
	})
	assertNotRefused(t, manager, scheduler)
}

// startReleased runs berth-manager with the args of the release's
// berth-manager Deployment, as its ServiceAccount, and berth-scheduler as
// its own; check sees the manager's args first.
func startReleased(t *testing.T, env *framework.ClusterEnv, release []string, check func([]string)) (manager, scheduler *framework.Process) {
	t.Helper()
	args := releasedManagerArgs(t, env, release)
	if check != nil {
		check(args)
	}
	manager = framework.StartManager(t, env, framework.ManagerOptions{Args: append(args,
		"--kubeconfig", env.ServiceAccountKubeconfig(t, namespace, "berth-manager"))})
	scheduler = framework.StartScheduler(t, env, func(cfg map[string]any) {
		cfg["clientConnection"].(map[string]any)["kubeconfig"] = env.ServiceAccountKubeconfig(t, namespace, "berth-scheduler")
		cfg["leaderElection"].(map[string]any)["resourceNamespace"] = namespace
	})
	return manager, scheduler
}

// releasedManagerArgs returns the args of the manager container in the
// release's manifest, less those naming where it listens and keeps its
// certificates: the test's process listens on 127.0.0.1 and is reached by
// URL, where the chart's Pod is reached through its Service.
func releasedManagerArgs(t *testing.T, env *framework.ClusterEnv, release []string) []string {
	t.Helper()
	out := helm(t, env, append([]string{"get", "manifest", "berth"}, release...)...)
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		d := &appsv1.Deployment{}
		err := dec.Decode(d)
		if errors.Is(err, io.EOF) {
			t.Fatal("the release has no berth-manager Deployment")
		}
		require.NoError(t, err)
		if d.Kind != "Deployment" || d.Name != "berth-manager" {
			continue
		}
		var args []string
		for _, a := range d.Spec.Template.Spec.Containers[0].Args {
			name, _, _ := strings.Cut(a, "=")
			switch name {
			case "--webhook-bind-address", "--webhook-service", "--cert-dir", "--metrics-bind-address", "--health-probe-bind-address":
				continue
			}
			args = append(args, a)
		}
		return args
	}
}

// serveThroughService gives the release's webhook configurations back
// the Service the chart names, keeping the CA berth-manager injected. Run
// beside the cluster, berth-manager pointed them at itself by URL; in a
// cluster they name the Service, and helm's three-way merge on upgrade
// must meet them as a cluster has them (with both, the API server refuses
// the patch).
func serveThroughService(t *testing.T, env *framework.ClusterEnv, release []string) {
	t.Helper()
	ctx := t.Context()
	out := helm(t, env, append([]string{"get", "manifest", "berth"}, release...)...)
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		rendered := &unstructured.Unstructured{}
		err := dec.Decode(&rendered.Object)
		if errors.Is(err, io.EOF) {
			return
		}
		require.NoError(t, err)
		if kind := rendered.GetKind(); kind != "MutatingWebhookConfiguration" && kind != "ValidatingWebhookConfiguration" {
			continue
		}
		services := map[string]any{}
		webhooks, _, _ := unstructured.NestedSlice(rendered.Object, "webhooks")
		for _, w := range webhooks {
			w := w.(map[string]any)
			services[w["name"].(string)], _, _ = unstructured.NestedFieldCopy(w, "clientConfig", "service")
		}
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(rendered.GroupVersionKind())
		require.NoError(t, env.Client.Get(ctx, client.ObjectKeyFromObject(rendered), live))
		webhooks, _, _ = unstructured.NestedSlice(live.Object, "webhooks")
		for _, w := range webhooks {
			w := w.(map[string]any)
			service := services[w["name"].(string)]
			require.NotNil(t, service, "the release names %s webhook %s", rendered.GetKind(), w["name"])
			unstructured.RemoveNestedField(w, "clientConfig", "url")
			require.NoError(t, unstructured.SetNestedField(w, service, "clientConfig", "service"))
		}
		require.NoError(t, unstructured.SetNestedSlice(live.Object, webhooks, "webhooks"))
		require.NoError(t, env.Client.Update(ctx, live))
	}
}

// workspace is a Workspace of one labelled container, started or not.
func workspace(ns, name string, started bool) *berthv1alpha1.Workspace {
	pod := testutil.Pod(name).Class(berthv1alpha1.ClassWorkspace).User("ana").Obj()
	return &berthv1alpha1.Workspace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: berthv1alpha1.WorkspaceSpec{Started: started, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels},
			Spec:       pod.Spec,
		}},
	}
}

// state is what an upgrade must keep: the UIDs of a namespace's Pods and
// Jobs by name, and how many Pods each Job made.
type state struct {
	pods, jobs map[string]types.UID
	podsOf     map[string]int
}

func snapshot(t *testing.T, env *framework.ClusterEnv, ns string) state {
	t.Helper()
	s := state{pods: map[string]types.UID{}, jobs: map[string]types.UID{}, podsOf: map[string]int{}}
	var pods corev1.PodList
	require.NoError(t, env.Client.List(t.Context(), &pods, client.InNamespace(ns)))
	for _, p := range pods.Items {
		s.pods[p.Name] = p.UID
		if job := p.Labels[batchv1.JobNameLabel]; job != "" {
			s.podsOf[job]++
		}
	}
	var jobs batchv1.JobList
	require.NoError(t, env.Client.List(t.Context(), &jobs, client.InNamespace(ns)))
	for _, j := range jobs.Items {
		s.jobs[j.Name] = j.UID
	}
	return s
}
