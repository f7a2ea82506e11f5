// Package chart tests berth's Helm chart on a real API server: what it
// renders is valid, matches what berth's code builds, and gives berth-manager
// and berth-scheduler every right they use and no more than the chart says.
package chart

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/diff"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
	"berth.dev/berth/webhooks"
)

func TestMain(m *testing.M) { framework.Main(m) }

// namespace is the release's namespace: berth-manager's default.
const namespace = "berth-system"

// TestChartRunsBerthWithItsOwnRights renders the chart as `helm install`
// would, creates every object it renders on the local cluster's API server,
// and then runs berth-manager and berth-scheduler as the chart's
// ServiceAccounts. A labelled workspace is admitted, charged and placed; a
// second is denied by the quota; two builds are queued, released one at a
// time, placed and finished; the org's status counts them. Neither process
// logs a forbidden request.
func TestChartRunsBerthWithItsOwnRights(t *testing.T) {
	env := framework.Cluster(t)
	root, err := localcluster.RepoRoot(".")
	require.NoError(t, err)
	chart := filepath.Join(root, "charts", "berth")
	helm(t, env, "lint", "--strict", chart)
	objs := render(t, env, chart)

	byKind := map[string][]*unstructured.Unstructured{}
	for _, o := range objs {
		byKind[o.GetKind()] = append(byKind[o.GetKind()], o)
	}
	for _, kind := range []string{"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
		"Service", "ConfigMap", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "PodDisruptionBudget", "PriorityClass",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		assert.NotEmpty(t, byKind[kind], "the chart renders a %s", kind)
	}
	checkWebhookConfigurations(t, byKind)
	checkSchedulerConfig(t, root, byKind["ConfigMap"])

	// Every object is valid on the API server.
	ctx := t.Context()
	require.NoError(t, client.IgnoreAlreadyExists(env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})))
	for _, o := range objs {
		require.NoError(t, env.Client.Create(ctx, o), "create %s %s", o.GetKind(), o.GetName())
	}
	// Removed when the test ends, so that the package's other tests do not
	// meet webhook configurations that call a stopped berth-manager.
	t.Cleanup(func() {
		for _, o := range objs {
			if err := env.Client.Delete(context.Background(), o); client.IgnoreNotFound(err) != nil {
				t.Logf("delete %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
	})

	// berth-manager with the chart's ServiceAccount. Run here, it points
	// the chart's webhook configurations at itself by URL, an update the
	// chart's rights allow on configurations named berth.
	manager := framework.StartManager(t, env, framework.ManagerOptions{Args: []string{
		"--kubeconfig", env.ServiceAccountKubeconfig(t, namespace, "berth-manager"), "--leader-elect",
	}})
	scheduler := framework.StartScheduler(t, env, func(cfg map[string]any) {
		cfg["clientConnection"].(map[string]any)["kubeconfig"] = env.ServiceAccountKubeconfig(t, namespace, "berth-scheduler")
		cfg["leaderElection"].(map[string]any)["resourceNamespace"] = namespace
	})

	org := testutil.Org("chart").MaxWorkspaces(1).MaxConcurrentBuilds(1).Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)
	helmTest(t, env, chart, ns)
	ws := testutil.Pod("ws").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
	env.Create(t, ws)
	assert.Equal(t, webhooks.DefaultSchedulerName, ws.Spec.SchedulerName)
	assert.Equal(t, "berth-workspace", ws.Spec.PriorityClassName, "the chart's PriorityClass of the class")
	assert.Equal(t, int32(1000), ptr.Deref(ws.Spec.Priority, 0))
	err = env.Client.Create(ctx, testutil.Pod("ws-2").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj())
	require.Error(t, err)
	assert.True(t, apierrors.IsForbidden(err), "a second workspace is over the quota: %v", err)
	for _, name := range []string{"build-a", "build-b"} {
		env.Create(t, testutil.Job(name).Namespace(ns).Class(berthv1alpha1.ClassBuild).Obj())
	}

	framework.Eventually(t, 2*time.Minute, "the workspace placed by berth-scheduler", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(ws), ws)
		return ws.Spec.NodeName != "", err
	})
	waitBuildsSucceeded(t, env, ns, 2, 2*time.Minute)
	framework.Eventually(t, time.Minute, "status.workspaces = 1", func(ctx context.Context) (bool, error) {
		got := &berthv1alpha1.Organization{}
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(org), got)
		return got.Status.Workspaces == 1, err
	})
	log, err := os.ReadFile(manager.Log)
	require.NoError(t, err)
	assert.Contains(t, string(log), `managerUsername="system:serviceaccount:`+namespace+`:berth-manager"`, "berth-manager runs as the chart's ServiceAccount")
	assertNotRefused(t, manager, scheduler)
}

// waitBuildsSucceeded waits until n Jobs of ns have succeeded.
func waitBuildsSucceeded(t *testing.T, env *framework.ClusterEnv, ns string, n int, timeout time.Duration) {
	t.Helper()
	framework.Eventually(t, timeout, fmt.Sprintf("%d builds released in turn and finished", n), func(ctx context.Context) (bool, error) {
		var jobs batchv1.JobList
		err := env.Client.List(ctx, &jobs, client.InNamespace(ns))
		done := 0
		for _, j := range jobs.Items {
			done += int(j.Status.Succeeded)
		}
		return done == n, err
	})
}

// assertNotRefused checks that none of procs, each run as one of the
// chart's ServiceAccounts, logged a request the API server refused it.
func assertNotRefused(t *testing.T, procs ...*framework.Process) {
	t.Helper()
	for _, p := range procs {
		log, err := os.ReadFile(p.Log)
		require.NoError(t, err)
		for _, line := range strings.Split(string(log), "\n") {
			assert.NotContains(t, strings.ToLower(line), "forbidden: user \"system:serviceaccount:", "%s was refused a request", p.Name)
		}
	}
}

// helmTest plays `helm test` with tests.namespace=ns: it creates the test
// hook's ServiceAccount and rights, and runs the hook Pod's container as
// the kubelet would, as that ServiceAccount (kwok runs no containers).
func helmTest(t *testing.T, env *framework.ClusterEnv, chart, ns string) {
	t.Helper()
	var hook *corev1.Pod
	for _, o := range render(t, env, chart, "--set", "tests.namespace="+ns, "--show-only", "templates/tests/selftest.yaml") {
		if o.GetKind() == "Pod" {
			hook = &corev1.Pod{}
			require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, hook))
			continue
		}
		require.NoError(t, env.Client.Create(t.Context(), o), "create %s %s", o.GetKind(), o.GetName())
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), o) })
	}
	require.NotNil(t, hook, "the chart renders a test hook Pod")
	assert.Equal(t, "test", hook.Annotations["helm.sh/hook"])
	ctr := hook.Spec.Containers[0]
	assert.Contains(t, ctr.Image, "berth-manager")
	cmd := exec.CommandContext(t.Context(), framework.Binary(t, "berth-manager"), ctr.Args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "KUBECONFIG=" + env.ServiceAccountKubeconfig(t, namespace, hook.Spec.ServiceAccountName)}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "helm test: %s", out)
	assert.Contains(t, string(out), "berth mutated a workspace Pod in namespace "+ns+": org chart, runAsNonRoot")
}

// TestChartWithCertManager renders the chart with cert-manager issuing the
// webhook certificate: an Issuer and a Certificate for the Service, the CA
// injector's annotation on both configurations, and berth's own rotator
// off. (cert-manager is not installed here, so nothing is created.)
func TestChartWithCertManager(t *testing.T) {
	env := framework.Cluster(t)
	root, err := localcluster.RepoRoot(".")
	require.NoError(t, err)
	objs := render(t, env, filepath.Join(root, "charts", "berth"), "--set", "webhook.certManager.enabled=true")
	kinds := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		kinds[o.GetKind()+"/"+o.GetName()] = o
	}
	require.Contains(t, kinds, "Issuer/berth-selfsigned")
	cert := kinds["Certificate/berth-webhook"]
	require.NotNil(t, cert)
	dns, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	assert.Contains(t, dns, "berth-webhook."+namespace+".svc")
	secret, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
	assert.Equal(t, "berth-webhook-cert", secret, "the Secret berth-manager mounts")
	for _, k := range []string{"MutatingWebhookConfiguration/berth", "ValidatingWebhookConfiguration/berth"} {
		require.Contains(t, kinds, k)
		assert.Equal(t, namespace+"/berth-webhook", kinds[k].GetAnnotations()["cert-manager.io/inject-ca-from"], k)
	}
	containers, _, _ := unstructured.NestedSlice(kinds["Deployment/berth-manager"].Object, "spec", "template", "spec", "containers")
	require.Len(t, containers, 1)
	args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	assert.Contains(t, args, "--rotate-certs=false")
}

// checkWebhookConfigurations compares the chart's webhook configurations
// with the ones berth-manager builds for a Service endpoint.
func checkWebhookConfigurations(t *testing.T, byKind map[string][]*unstructured.Unstructured) {
	t.Helper()
	wantMut, wantVal := webhooks.Configurations(webhooks.Config{Namespace: namespace}, webhooks.Endpoint{
		Service: &admissionregistrationv1.ServiceReference{Namespace: namespace, Name: "berth-webhook", Port: ptr.To[int32](443)},
	})
	require.Len(t, byKind["MutatingWebhookConfiguration"], 1)
	require.Len(t, byKind["ValidatingWebhookConfiguration"], 1)
	var mut admissionregistrationv1.MutatingWebhookConfiguration
	var val admissionregistrationv1.ValidatingWebhookConfiguration
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(byKind["MutatingWebhookConfiguration"][0].Object, &mut))
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(byKind["ValidatingWebhookConfiguration"][0].Object, &val))
	assert.Equal(t, webhooks.ConfigurationName, mut.Name)
	assert.Equal(t, webhooks.ConfigurationName, val.Name)
	assert.True(t, equality.Semantic.DeepEqual(wantMut.Webhooks, mut.Webhooks),
		"charts/berth/templates/webhooks.yaml differs from webhooks.Configurations:\n%s", diff.Diff(wantMut.Webhooks, mut.Webhooks))
	assert.True(t, equality.Semantic.DeepEqual(wantVal.Webhooks, val.Webhooks),
		"charts/berth/templates/webhooks.yaml differs from webhooks.Configurations:\n%s", diff.Diff(wantVal.Webhooks, val.Webhooks))
}

// checkSchedulerConfig checks that the chart runs berth-scheduler with the
// shipped configuration, its lease moved into the release's namespace.
func checkSchedulerConfig(t *testing.T, root string, cms []*unstructured.Unstructured) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, framework.SchedulerConfig))
	require.NoError(t, err)
	var want map[string]any
	require.NoError(t, yaml.Unmarshal(raw, &want))
	want["leaderElection"].(map[string]any)["resourceNamespace"] = namespace
	for _, cm := range cms {
		if cm.GetName() != "berth-scheduler" {
			continue
		}
		data, _, _ := unstructured.NestedString(cm.Object, "data", "config.yaml")
		var got map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(data), &got))
		assert.Equal(t, want, got)
		return
	}
	t.Fatal("no ConfigMap berth-scheduler rendered")
}

// helm runs the pinned helm from the tool cache, and fails the test if
// helm fails.
func helm(t *testing.T, env *framework.ClusterEnv, args ...string) []byte {
	t.Helper()
	out, stderr, err := helmResult(t, env, args...)
	require.NoError(t, err, "helm %s: %s", strings.Join(args, " "), stderr)
	return out
}

// helmResult runs the pinned helm and returns its output, what it said on
// stderr, and its error.
func helmResult(t *testing.T, env *framework.ClusterEnv, args ...string) ([]byte, string, error) {
	t.Helper()
	if _, err := os.Stat(env.Tools.Helm); err != nil {
		t.Fatalf("helm is not in the tool cache (%v): run `make tools`", err)
	}
	cmd := exec.CommandContext(t.Context(), env.Tools.Helm, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	return out, stderr.String(), err
}

// render is `helm template` of the chart into the release namespace,
// without the CRDs (the cluster has them), as objects; args are more helm
// flags.
func render(t *testing.T, env *framework.ClusterEnv, chart string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(env.Config)
	require.NoError(t, err)
	v, err := dc.ServerVersion()
	require.NoError(t, err)
	out := helm(t, env, append([]string{"template", "berth", chart, "--namespace", namespace, "--kube-version", v.GitVersion}, args...)...)
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return objs
		}
		require.NoError(t, err)
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}
