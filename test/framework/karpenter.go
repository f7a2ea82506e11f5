package framework

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"berth.dev/berth/pkg/localcluster"
)

// The NodePools, node class and instance types the local cluster's Karpenter
// launches nodes from.
const (
	KarpenterNodePools     = "manifests/karpenter/nodepools.yaml"
	KarpenterInstanceTypes = "manifests/karpenter/instance-types.json"
)

// StartKarpenter runs Karpenter with its kwok provider against the cluster
// until the test ends. It installs Karpenter's CRDs, then the objects of
// KarpenterNodePools that do not exist yet, each passed to edit first when
// edit is set, marks the node class ready (the kwok provider has no
// controller of its own for that) and waits until Karpenter is ready. The
// nodes it launches are kwok nodes, which the cluster's kwok controller
// runs.
//
// Karpenter binds its metrics and health ports on every interface (its flags
// take a port, not an address); both are free ports, and nothing else
// listens there.
func StartKarpenter(t testing.TB, env *ClusterEnv, edit func(*unstructured.Unstructured)) *Process {
	t.Helper()
	if _, err := os.Stat(env.Tools.Karpenter); err != nil {
		t.Fatalf("karpenter: %v; run `make tools` to build it", err)
	}
	crds, err := localcluster.DecodeCRDs(os.DirFS(env.Tools.KarpenterCRDs))
	if err != nil {
		t.Fatalf("karpenter CRDs: %v", err)
	}
	if err := localcluster.ApplyCRDs(t.Context(), env.Client, crds); err != nil {
		t.Fatalf("karpenter CRDs: %v", err)
	}
	objs, err := decodeObjects(filepath.Join(state.root, KarpenterNodePools))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if edit != nil {
			edit(o)
		}
		err := env.Client.Create(t.Context(), o)
		if apierrors.IsAlreadyExists(err) {
			continue // an earlier test's
		}
		if err != nil {
			t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
		}
		if o.GetKind() == "KWOKNodeClass" {
			markReady(t, env, o)
		}
	}

	metricsPort, healthPort := FreePort(t), FreePort(t)
	p := StartProcess(t, "karpenter", env.Tools.Karpenter, []string{
		"--disable-leader-election",
		fmt.Sprintf("--metrics-port=%d", metricsPort),
		fmt.Sprintf("--health-probe-port=%d", healthPort),
	},
		"KUBECONFIG="+env.Kubeconfig(),
		"SYSTEM_NAMESPACE=kube-system",
		"DISABLE_WEBHOOK=true",
		"INSTANCE_TYPES_FILE_PATH="+filepath.Join(state.root, KarpenterInstanceTypes),
	)
	p.WaitHealthy(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort), 2*time.Minute)
	return p
}

// markReady sets the node class's Ready condition, which NodePools wait for.
func markReady(t testing.TB, env *ClusterEnv, o *unstructured.Unstructured) {
	t.Helper()
	cond := map[string]any{
		"type": "Ready", "status": "True", "reason": "Ready", "message": "",
		"lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
		"observedGeneration": o.GetGeneration(),
	}
	if err := unstructured.SetNestedSlice(o.Object, []any{cond}, "status", "conditions"); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Status().Update(t.Context(), o); err != nil {
		t.Fatalf("mark %s %s ready: %v", o.GetKind(), o.GetName(), err)
	}
}

// decodeObjects reads every object of a multi-document YAML file.
func decodeObjects(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		o := &unstructured.Unstructured{}
		if err := dec.Decode(&o.Object); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("decode %s: %w", path, err)
		}
		if len(o.Object) > 0 {
			out = append(out, o)
		}
	}
}
