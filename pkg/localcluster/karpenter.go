package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The NodePools, node class and instance types the local cluster's Karpenter
// launches nodes from, relative to the repository's root.
const (
	KarpenterNodePools     = "manifests/karpenter/nodepools.yaml"
	KarpenterInstanceTypes = "manifests/karpenter/instance-types.json"
)

// InstallKarpenter installs Karpenter's CRDs and the objects of
// KarpenterNodePools that do not exist yet, each passed to edit first when
// edit is set, and marks the node class ready: NodePools wait for it, and
// the kwok provider has no controller of its own that would.
func InstallKarpenter(ctx context.Context, c client.Client, tools Tools, root string, edit func(*unstructured.Unstructured)) error {
	if _, err := os.Stat(tools.Karpenter); err != nil {
		return fmt.Errorf("karpenter: %w; run `make tools` to build it", err)
	}
	crds, err := DecodeCRDs(os.DirFS(tools.KarpenterCRDs))
	if err != nil {
		return fmt.Errorf("karpenter CRDs: %w", err)
	}
	if err := ApplyCRDs(ctx, c, crds); err != nil {
		return fmt.Errorf("karpenter CRDs: %w", err)
	}
	objs, err := decodeObjects(filepath.Join(root, KarpenterNodePools))
	if err != nil {
		return err
	}
	for _, o := range objs {
		if edit != nil {
			edit(o)
		}
		err := c.Create(ctx, o)
		if apierrors.IsAlreadyExists(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("create %s %s: %w", o.GetKind(), o.GetName(), err)
		}
		if o.GetKind() != "KWOKNodeClass" {
			continue
		}
		ready := map[string]any{
			"type": "Ready", "status": "True", "reason": "Ready", "message": "",
			"lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
			"observedGeneration": o.GetGeneration(),
		}
		if err := unstructured.SetNestedSlice(o.Object, []any{ready}, "status", "conditions"); err != nil {
			return err
		}
		if err := c.Status().Update(ctx, o); err != nil {
			return fmt.Errorf("mark %s %s ready: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return nil
}

// KarpenterCommand is the command that runs Karpenter with its kwok
// provider against the cluster, without leader election or webhooks, as a
// plain process: env's arguments, since Karpenter reads its kubeconfig and
// instance types from its environment. It serves its readiness at
// http://127.0.0.1:{healthPort}/readyz. Karpenter binds its metrics and
// health ports on every interface: its flags take a port, not an address.
func KarpenterCommand(tools Tools, root, kubeconfig string, metricsPort, healthPort int) []string {
	return []string{
		"KUBECONFIG=" + kubeconfig,
		"SYSTEM_NAMESPACE=kube-system",
		"DISABLE_WEBHOOK=true",
		"INSTANCE_TYPES_FILE_PATH=" + filepath.Join(root, KarpenterInstanceTypes),
		tools.Karpenter,
		"--disable-leader-election",
		fmt.Sprintf("--metrics-port=%d", metricsPort),
		fmt.Sprintf("--health-probe-port=%d", healthPort),
	}
}

// KarpenterQuickConsolidation is an edit for InstallKarpenter, for tests
// and the demo: every NodePool removes a node d after it empties, rather
// than minutes, and may remove all its empty nodes at once, rather than
// Karpenter's default of 10% of them at a time.
func KarpenterQuickConsolidation(d string) func(*unstructured.Unstructured) {
	return func(o *unstructured.Unstructured) {
		if o.GetKind() != "NodePool" {
			return
		}
		_ = unstructured.SetNestedField(o.Object, d, "spec", "disruption", "consolidateAfter")
		_ = unstructured.SetNestedSlice(o.Object, []any{map[string]any{"nodes": "100%"}}, "spec", "disruption", "budgets")
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
