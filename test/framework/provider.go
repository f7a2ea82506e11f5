package framework

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"berth.dev/berth/pkg/localcluster"
)

// The providers of a cluster with berth on it, named by E2E_PROVIDER.
const (
	// ProviderLocal is the local cluster (kwok's fake nodes) with
	// berth-manager and berth-scheduler run beside it: what CI runs.
	ProviderLocal = "local"
	// ProviderKind is the kind cluster `make kind-up` made, with berth
	// installed from its chart. Its kubeconfig is E2E_KUBECONFIG, by default
	// bin/kind-$KIND_CLUSTER.kubeconfig (KIND_CLUSTER: berth).
	ProviderKind = "kind"
)

// berthNamespace is where the chart installs berth on a provided cluster.
const berthNamespace = "berth-system"

// Provider returns the provider E2E_PROVIDER names.
func Provider() (string, error) {
	switch p := os.Getenv("E2E_PROVIDER"); p {
	case "", ProviderLocal:
		return ProviderLocal, nil
	case ProviderKind:
		return ProviderKind, nil
	default:
		return "", fmt.Errorf("E2E_PROVIDER=%q: use %s (the local cluster with berth beside it, the default) or %s (the cluster make kind-up made)",
			p, ProviderLocal, ProviderKind)
	}
}

// Berth returns a cluster with berth running on it, from the provider
// E2E_PROVIDER names. On the local provider it starts the package's local
// cluster, berth-manager (every webhook and controller) and berth-scheduler
// on first use; they run until the package's tests end. On kind it connects
// to the cluster and checks that berth's Deployments are available. Tests
// that call it must pass on every provider: they reach berth only through
// the API server, and wait for what a kubelet does rather than time it.
func Berth(t testing.TB) *ClusterEnv {
	t.Helper()
	requireMain(t)
	p, err := Provider()
	if err != nil {
		t.Fatal(err)
	}
	if p == ProviderKind {
		state.mu.Lock()
		defer state.mu.Unlock()
		if state.provided == nil && state.providedErr == nil {
			state.provided, state.providedErr = connectKind()
		}
		if state.providedErr != nil {
			t.Fatalf("framework: %v", state.providedErr)
		}
		return state.provided
	}
	env := Cluster(t)
	state.berthOnce.Do(func() {
		StartPackageManager(t, env, ManagerOptions{})
		StartPackageScheduler(t, env, nil)
	})
	return env
}

// connectKind connects to the kind cluster and checks that berth runs on it.
func connectKind() (*ClusterEnv, error) {
	path := os.Getenv("E2E_KUBECONFIG")
	if path == "" {
		path = filepath.Join(state.root, "bin", "kind-"+cmp.Or(os.Getenv("KIND_CLUSTER"), "berth")+".kubeconfig")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("E2E_PROVIDER=kind: read kubeconfig %s: %w; make kind-up writes it, or set E2E_KUBECONFIG", path, err)
	}
	scheme, err := localcluster.Scheme()
	if err != nil {
		return nil, err
	}
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("E2E_PROVIDER=kind: client for %s: %w", path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range []string{"berth-manager", "berth-scheduler"} {
		d := &appsv1.Deployment{}
		if err := cl.Get(ctx, client.ObjectKey{Namespace: berthNamespace, Name: name}, d); err != nil {
			return nil, fmt.Errorf("E2E_PROVIDER=kind: Deployment %s/%s: %w; install berth with make kind-up", berthNamespace, name, err)
		}
		if d.Status.AvailableReplicas == 0 {
			return nil, fmt.Errorf("E2E_PROVIDER=kind: Deployment %s/%s has no available replica; see kubectl -n %s describe deployment %s",
				berthNamespace, name, berthNamespace, name)
		}
	}
	pools, err := localcluster.DefaultPools()
	if err != nil {
		return nil, err
	}
	return &ClusterEnv{Config: cfg, Client: cl, Scheme: scheme, Pools: pools, Tools: state.tools, kubeconfig: path}, nil
}
