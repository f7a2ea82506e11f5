// Command localcluster starts and stops berth's local cluster: a real API
// server, controller manager and scheduler (kwokctl's binary runtime) with
// fake node pools from manifests/local-cluster/pools.yaml.
//
//	localcluster up [--spot-ssd=N --on-demand=N --gpu=N]
//	localcluster down
//	localcluster demo [--autoscaler=karpenter]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"berth.dev/berth/pkg/localcluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "localcluster: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		return fmt.Errorf("usage: localcluster up|down|demo [flags]")
	}
	pools, err := localcluster.DefaultPools()
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	name := fs.String("name", localcluster.DefaultName, "cluster name")
	workDir := fs.String("work-dir", localcluster.DefaultWorkDir(), "where the cluster's files live ($BERTH_CLUSTER_DIR)")
	autoscaler := fs.String("autoscaler", "", "demo: karpenter runs Karpenter with its kwok provider, on a cluster brought up with no worker nodes")
	for i := range pools.Pools {
		p := &pools.Pools[i]
		fs.IntVar(&p.Count, p.Name, p.Count, fmt.Sprintf("nodes in pool %s (%s)", p.Name, p.InstanceType))
	}
	if err := fs.Parse(os.Args[2:]); err != nil {
		return err
	}
	root, err := localcluster.RepoRoot(".")
	if err != nil {
		return err
	}
	tools, err := localcluster.LocateTools(ctx, root)
	if err != nil {
		return err
	}
	opts := localcluster.Options{Name: *name, WorkDir: *workDir, Tools: tools}

	switch os.Args[1] {
	case "up":
		return up(ctx, opts, pools, root)
	case "down":
		c, err := localcluster.Open(*name, *workDir, tools)
		if err != nil {
			fmt.Printf("local cluster %q is not running\n", *name)
			return nil
		}
		if err := c.Delete(ctx); err != nil {
			return err
		}
		fmt.Printf("local cluster %q deleted\n", *name)
		return nil
	case "demo":
		c, err := localcluster.Open(*name, *workDir, tools)
		if err != nil {
			return fmt.Errorf("%w; run `make cluster-up` first", err)
		}
		if *autoscaler != "" && *autoscaler != "karpenter" {
			return fmt.Errorf("--autoscaler=%q is unknown; use karpenter, or leave it out for fixed node pools", *autoscaler)
		}
		return runDemo(ctx, c, pools, root, *autoscaler == "karpenter")
	default:
		return fmt.Errorf("unknown command %q: use up, down or demo", os.Args[1])
	}
}

func up(ctx context.Context, opts localcluster.Options, pools *localcluster.Pools, root string) error {
	c, err := localcluster.Up(ctx, opts, pools)
	if err != nil {
		return err
	}
	// ./bin/kubectl is the pinned kubectl, so the README's commands work
	// without a kubectl of the user's own.
	link := filepath.Join(root, "bin", "kubectl")
	_ = os.MkdirAll(filepath.Dir(link), 0o755)
	_ = os.Remove(link)
	if err := os.Symlink(opts.Tools.Kubectl, link); err != nil {
		return err
	}
	cl, err := c.Client()
	if err != nil {
		return err
	}
	fmt.Printf("local cluster %q is up\n\n", opts.Name)
	if err := localcluster.PrintPools(ctx, cl, os.Stdout); err != nil {
		return err
	}
	fmt.Printf("\nexport KUBECONFIG=%s\n./bin/kubectl get nodes -L %s,kubernetes.azure.com/scalesetpriority\n",
		c.Kubeconfig(), localcluster.LabelPool)
	return nil
}
