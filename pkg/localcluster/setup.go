package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"berth.dev/berth/manifests"
)

// DefaultPools returns the pools of manifests/local-cluster/pools.yaml.
func DefaultPools() (*Pools, error) { return ParsePools(manifests.Pools()) }

// CreateNodes creates every pool's fake nodes. Nodes that exist are left as
// they are, so it is safe to call again.
func CreateNodes(ctx context.Context, c client.Client, pools *Pools) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range pools.Pools {
		p := &pools.Pools[i]
		for n := range p.Count {
			g.Go(func() error {
				node := p.Node(n)
				if err := c.Create(ctx, node); err != nil && !apierrors.IsAlreadyExists(err) {
					return fmt.Errorf("create node %s: %w", node.Name, err)
				}
				return nil
			})
		}
	}
	return g.Wait()
}

// CRDs decodes the CustomResourceDefinitions berth ships.
func CRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	return DecodeCRDs(manifests.CRDs())
}

// DecodeCRDs decodes the CustomResourceDefinitions in fsys's YAML files.
func DecodeCRDs(fsys fs.FS) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var crds []*apiextensionsv1.CustomResourceDefinition
	err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := dec.Decode(crd); errors.Is(err, io.EOF) {
				return nil
			} else if err != nil {
				return fmt.Errorf("decode %s: %w", path, err)
			}
			if crd.Name != "" {
				crds = append(crds, crd)
			}
		}
	})
	return crds, err
}

// InstallCRDs creates or updates berth's CRDs and waits until the API server
// serves them.
func InstallCRDs(ctx context.Context, c client.Client) error {
	crds, err := CRDs()
	if err != nil {
		return err
	}
	return ApplyCRDs(ctx, c, crds)
}

// ApplyCRDs creates or updates crds and waits until the API server serves
// them.
func ApplyCRDs(ctx context.Context, c client.Client, crds []*apiextensionsv1.CustomResourceDefinition) error {
	for _, crd := range crds {
		existing := &apiextensionsv1.CustomResourceDefinition{}
		err := c.Get(ctx, client.ObjectKeyFromObject(crd), existing)
		switch {
		case apierrors.IsNotFound(err):
			err = c.Create(ctx, crd)
		case err == nil:
			crd.ResourceVersion = existing.ResourceVersion
			err = c.Update(ctx, crd)
		}
		if err != nil {
			return fmt.Errorf("install CRD %s: %w", crd.Name, err)
		}
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			got := &apiextensionsv1.CustomResourceDefinition{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(crd), got); err != nil {
				return false, err
			}
			for _, cond := range got.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("wait for CRD %s to be established: %w", crd.Name, err)
		}
	}
	return nil
}

// ReadyNodes counts the nodes whose Ready condition is True.
func ReadyNodes(ctx context.Context, c client.Client) (int, error) {
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		return 0, err
	}
	ready := 0
	for _, n := range nodes.Items {
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready++
			}
		}
	}
	return ready, nil
}
