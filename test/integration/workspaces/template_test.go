package workspaces

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// A Workspace template becomes a Pod that berth-manager creates. So only a
// user who may create Pods in the namespace may set or change one; a
// gateway that may only update Workspaces starts and stops them, but
// cannot make them run something else.
func TestOnlyAPodCreatorSetsATemplate(t *testing.T) {
	t.Parallel()
	env := setup(t)
	org := testutil.Org("ws-template").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)
	workspaceRights := rbacv1.PolicyRule{APIGroups: []string{berthv1alpha1.GroupName}, Resources: []string{"workspaces"},
		Verbs: []string{"get", "create", "update", "patch"}}
	gateway := clientAs(t, env, env.ServiceAccountToken(t, ns, "gateway", workspaceRights))
	dev := clientAs(t, env, env.ServiceAccountToken(t, ns, "dev", workspaceRights,
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"create"}}))
	ctx := t.Context()

	ws := workspace(ns, "ide", "")
	ws.Spec.Started = false
	// berth-manager installed the policy at its start; the API server
	// enforces it once its policy informer has it.
	var err error
	framework.Eventually(t, time.Minute, "the gateway's create of a Workspace is refused", func(ctx context.Context) (bool, error) {
		err = gateway.Create(ctx, ws.DeepCopy(), client.DryRunAll)
		return err != nil, nil
	})
	require.True(t, apierrors.IsForbidden(err), "a Forbidden error: %v", err)
	assert.ErrorContains(t, err, "may not create Pods in namespace "+ns)
	assert.ErrorContains(t, err, "Grant create on pods in the namespace")

	require.NoError(t, dev.Create(ctx, ws), "a user who may create Pods sets the template")

	started := client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"started":true}}`))
	require.NoError(t, gateway.Patch(ctx, ws.DeepCopy(), started), "the gateway starts the workspace")
	stopped := client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"started":false}}`))
	require.NoError(t, gateway.Patch(ctx, ws.DeepCopy(), stopped), "and stops it")

	other := client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"template":{"spec":{"serviceAccountName":"deployer"}}}}`))
	err = gateway.Patch(ctx, ws.DeepCopy(), other)
	require.True(t, apierrors.IsForbidden(err), "the gateway's change of the template is refused: %v", err)
	assert.ErrorContains(t, err, "may not create Pods in namespace "+ns)
	require.NoError(t, dev.Patch(ctx, ws.DeepCopy(), other), "the developer's is not")
}

// clientAs is a client of the cluster acting with token.
func clientAs(t *testing.T, env *framework.ClusterEnv, token string) client.Client {
	t.Helper()
	cfg := rest.AnonymousClientConfig(env.Config)
	cfg.BearerToken = token
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	require.NoError(t, err)
	return c
}
