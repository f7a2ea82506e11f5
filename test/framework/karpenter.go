package framework

import (
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"berth.dev/berth/pkg/localcluster"
)

// StartKarpenter runs Karpenter with its kwok provider against the cluster
// until the test ends, with the NodePools of localcluster.KarpenterNodePools
// (see localcluster.InstallKarpenter for edit), and waits until it is
// ready. The nodes it launches are kwok nodes, which the cluster's kwok
// controller runs. Its metrics and health ports are free ports.
func StartKarpenter(t testing.TB, env *ClusterEnv, edit func(*unstructured.Unstructured)) *Process {
	t.Helper()
	if err := localcluster.InstallKarpenter(t.Context(), env.Client, env.Tools, state.root, edit); err != nil {
		t.Fatal(err)
	}
	healthPort := FreePort(t)
	cmd := localcluster.KarpenterCommand(env.Tools, state.root, env.Kubeconfig(), FreePort(t), healthPort)
	p := StartProcess(t, "karpenter", "env", cmd)
	p.WaitHealthy(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort), 2*time.Minute)
	return p
}
