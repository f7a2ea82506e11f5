package framework

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"berth.dev/berth/pkg/localcluster"
)

// StartKarpenter runs Karpenter with its kwok provider against the cluster
// until the test ends, with the NodePools of localcluster.KarpenterNodePools
// (see localcluster.InstallKarpenter for edit), and waits until it is
// ready. The nodes it launches are kwok nodes, which the cluster's kwok
// controller runs. Its metrics and health ports are free ports.
//
// When the test ends, and before Karpenter stops, every NodeClaim is
// deleted and the test waits for their nodes to go, so that the next test
// starts from a cluster with no worker node even when this one failed
// half-way through its load.
func StartKarpenter(t testing.TB, env *ClusterEnv, edit func(*unstructured.Unstructured)) *Process {
	t.Helper()
	if err := localcluster.InstallKarpenter(t.Context(), env.Client, env.Tools, state.root, edit); err != nil {
		t.Fatal(err)
	}
	p := onFreePorts(t, "karpenter", func() (*Process, error) {
		healthPort := FreePort(t)
		cmd := localcluster.KarpenterCommand(env.Tools, state.root, env.Kubeconfig(), FreePort(t), healthPort)
		p := StartProcess(t, "karpenter", "env", cmd)
		if err := p.waitHealthy(t.Context(), fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort), 2*time.Minute); err != nil {
			p.Stop()
			return p, fmt.Errorf("not ready: %w", err)
		}
		return p, nil
	})
	t.Cleanup(func() { removeNodes(t, env) })
	return p
}

// removeNodes deletes Karpenter's NodeClaims and waits until none of
// their nodes (labelled with their NodePool) is left. Karpenter, still
// running, drains and deletes each node.
func removeNodes(t testing.TB, env *ClusterEnv) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	claim := &unstructured.Unstructured{}
	claim.SetAPIVersion("karpenter.sh/v1")
	claim.SetKind("NodeClaim")
	if err := env.Client.DeleteAllOf(ctx, claim); err != nil && !meta.IsNoMatchError(err) {
		t.Errorf("delete Karpenter's NodeClaims: %v", err)
		return
	}
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		var nodes corev1.NodeList
		err := env.Client.List(ctx, &nodes, client.HasLabels{"karpenter.sh/nodepool"})
		return len(nodes.Items) == 0, err
	})
	if err != nil {
		t.Errorf("the nodes of Karpenter's deleted NodeClaims are still there after 3m: %v", err)
	}
}
