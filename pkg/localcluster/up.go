package localcluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// DefaultName is the name of the cluster `make cluster-up` starts.
const DefaultName = "berth"

// DefaultWorkDir is where `make cluster-up` keeps the cluster: outside the
// clone, beside the tool cache.
func DefaultWorkDir() string {
	if d := os.Getenv("BERTH_CLUSTER_DIR"); d != "" {
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "berth", "cluster")
}

// Scheme returns a scheme with the built-in types, CRDs and berth's types.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, berthv1alpha1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// RESTConfig reaches the cluster's API server as cluster admin.
func (c *Cluster) RESTConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", c.Kubeconfig(), err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	return cfg, nil
}

// Client returns a client for the cluster, with Scheme's types.
func (c *Cluster) Client() (client.Client, error) {
	cfg, err := c.RESTConfig()
	if err != nil {
		return nil, err
	}
	s, err := Scheme()
	if err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: s})
}

// Up starts the cluster (or finds it running), installs berth's CRDs, creates
// the pools' nodes and waits until they are Ready.
func Up(ctx context.Context, opts Options, pools *Pools) (*Cluster, error) {
	c, err := Open(opts.Name, opts.WorkDir, opts.Tools)
	if err == nil && len(c.PIDs()) > 0 {
		if err := c.waitHealthy(ctx, 30*time.Second); err != nil {
			return nil, fmt.Errorf("%w; run `make cluster-down` and try again", err)
		}
	} else {
		if err == nil { // files of a stopped cluster: start afresh
			_ = c.Delete(ctx)
		}
		if c, err = Create(ctx, opts); err != nil {
			return nil, err
		}
	}
	cl, err := c.Client()
	if err != nil {
		return nil, err
	}
	if err := InstallCRDs(ctx, cl); err != nil {
		return nil, err
	}
	if err := CreateNodes(ctx, cl, pools); err != nil {
		return nil, err
	}
	want := 0
	for _, p := range pools.Pools {
		want += p.Count
	}
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		n, err := ReadyNodes(ctx, cl)
		return n >= want, err
	})
	if err != nil {
		return nil, fmt.Errorf("wait for %d Ready nodes: %w", want, err)
	}
	return c, nil
}

// PrintPools writes one line per pool: its nodes, labels and taints, and the
// cluster's allocatable totals.
func PrintPools(ctx context.Context, cl client.Client, w io.Writer) error {
	var nodes corev1.NodeList
	if err := cl.List(ctx, &nodes); err != nil {
		return err
	}
	type row struct {
		nodes  int
		cpu    int64
		gpu    int64
		taints string
		itype  string
	}
	rows := map[string]*row{}
	for _, n := range nodes.Items {
		p := n.Labels[LabelPool]
		r := rows[p]
		if r == nil {
			r = &row{itype: n.Labels[corev1.LabelInstanceTypeStable]}
			var ts []string
			for _, t := range n.Spec.Taints {
				ts = append(ts, t.ToString())
			}
			r.taints = strings.Join(ts, ",")
			rows[p] = r
		}
		r.nodes++
		r.cpu += n.Status.Allocatable.Cpu().Value()
		gpu := n.Status.Allocatable[corev1.ResourceName("nvidia.com/gpu")]
		r.gpu += gpu.Value()
	}
	names := make([]string, 0, len(rows))
	for k := range rows {
		names = append(names, k)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tNODES\tINSTANCE TYPE\tCPU\tGPU\tTAINTS")
	for _, p := range names {
		r := rows[p]
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%s\n", p, r.nodes, r.itype, r.cpu, r.gpu, r.taints)
	}
	return tw.Flush()
}
