// Package admission tests berth's webhooks registered in a real API server:
// berth-manager runs as a process and the API server calls it over TLS.
package admission

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"berth.dev/berth/test/framework"
)

func TestMain(m *testing.M) { framework.Main(m) }

var (
	managerOnce sync.Once
	manager     *framework.Process
)

// setup returns the cluster with one berth-manager serving the webhooks and
// running the controllers. It keeps Pods' schedulerName (the stock scheduler
// places them) so that builds run and finish on the fake nodes.
func setup(t *testing.T) *framework.ClusterEnv {
	env := framework.Cluster(t)
	managerOnce.Do(func() {
		manager = framework.StartPackageManager(t, env, framework.ManagerOptions{Args: []string{"--scheduler-name="}})
	})
	if manager == nil {
		t.Fatal("berth-manager failed to start in an earlier test")
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("berth-manager log, last lines:\n%s", manager.Tail(30))
		}
	})
	return env
}

// podMutations reads berth-manager's count of Pods the Pod mutating webhook
// allowed with the given result: "patched" or "unchanged".
func podMutations(t *testing.T, result string) float64 {
	t.Helper()
	n, err := manager.MetricValue("berth_webhook_mutations_total", `kind="Pod"`, `result="`+result+`"`)
	require.NoError(t, err)
	return n
}

// orgNamespace creates a namespace of org for one test, in which the API
// server itself enforces Pod Security "restricted" with the upstream
// evaluator: every Pod an admission test admits there passes it.
func orgNamespace(t *testing.T, env *framework.ClusterEnv, org string) string {
	t.Helper()
	ns := env.Namespace(t, org)
	obj := &corev1.Namespace{}
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Name: ns}, obj))
	obj.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	obj.Labels["pod-security.kubernetes.io/enforce-version"] = "latest"
	require.NoError(t, env.Client.Update(t.Context(), obj))
	return ns
}

// developer returns a client acting as a developer with the edit
// ClusterRole in namespace ns, as a tenant is given: not berth-manager's
// user, whom the build queue trusts.
func developer(t *testing.T, env *framework.ClusterEnv, ns string) client.Client {
	t.Helper()
	user := "dev-" + rand.String(5)
	env.Create(t, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user + "-edit"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}},
	})
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	require.NoError(t, err)
	// The API server's RBAC cache takes a moment to see the new binding.
	framework.Eventually(t, 30*time.Second, user+" to list Jobs", func(ctx context.Context) (bool, error) {
		err := c.List(ctx, &batchv1.JobList{}, client.InNamespace(ns))
		if apierrors.IsForbidden(err) {
			return false, nil
		}
		return err == nil, err
	})
	return c
}
