package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"berth.dev/berth/pkg/demo"
	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/placement"
)

// runDemo starts berth-manager, berth-scheduler, a private PostgreSQL and
// berth-meter beside the cluster (they stop with `make cluster-down`) and
// runs the demo.
func runDemo(ctx context.Context, c *localcluster.Cluster, pools *localcluster.Pools, root string, karpenter bool) error {
	cl, err := c.Client()
	if err != nil {
		return err
	}
	bin := filepath.Join(root, "bin")
	if karpenter {
		if err := startKarpenter(ctx, c, cl, root); err != nil {
			return err
		}
	}
	if !running(c, "berth-manager") {
		ports, err := localcluster.FreePorts(3)
		if err != nil {
			return err
		}
		fmt.Println("starting berth-manager (webhooks, build queue, org status, workspaces) ...")
		err = c.StartComponent(ctx, "berth-manager", filepath.Join(bin, "berth-manager"),
			"--kubeconfig", c.Kubeconfig(),
			"--webhook-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[0]),
			"--webhook-url", fmt.Sprintf("https://localhost:%d", ports[0]),
			"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[1]),
			"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[2]),
			"--cert-dir", filepath.Join(c.Dir(), "berth-certs"))
		if err != nil {
			return err
		}
		if err := localcluster.WaitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[2]), time.Minute); err != nil {
			return fmt.Errorf("berth-manager: %w\n%s", err, c.ComponentLog("berth-manager", 20))
		}
		if err := localcluster.WaitWebhookCA(ctx, cl, time.Minute); err != nil {
			return err
		}
	}
	if !running(c, "berth-scheduler") {
		port, err := localcluster.FreePorts(1)
		if err != nil {
			return err
		}
		config, err := schedulerConfig(c, root)
		if err != nil {
			return err
		}
		fmt.Println("starting berth-scheduler ...")
		err = c.StartComponent(ctx, "berth-scheduler", filepath.Join(bin, "berth-scheduler"),
			"--config", config, "--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(port[0]))
		if err != nil {
			return err
		}
		if err := localcluster.WaitHTTP(ctx, fmt.Sprintf("https://127.0.0.1:%d/healthz", port[0]), time.Minute); err != nil {
			return fmt.Errorf("berth-scheduler: %w\n%s", err, c.ComponentLog("berth-scheduler", 20))
		}
	}
	fmt.Println("starting PostgreSQL and berth-meter (usage and cost) ...")
	dsn, err := c.StartPostgres(ctx)
	if err != nil {
		return err
	}
	if !running(c, "berth-meter") {
		port, err := localcluster.FreePorts(1)
		if err != nil {
			return err
		}
		err = c.StartComponent(ctx, "berth-meter", filepath.Join(bin, "berth-meter"), "run",
			"--kubeconfig", c.Kubeconfig(), "--database-url", dsn, "--interval", "5s",
			"--prices", filepath.Join(root, "manifests", "local-cluster", "pools.yaml"),
			"--api-bind-address", "0", "--metrics-bind-address", "0",
			"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", port[0]))
		if err != nil {
			return err
		}
		if err := localcluster.WaitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", port[0]), time.Minute); err != nil {
			return fmt.Errorf("berth-meter: %w\n%s", err, c.ComponentLog("berth-meter", 20))
		}
	}
	keys, err := placement.Preset(placement.PresetAKS)
	if err != nil {
		return err
	}
	return demo.Run(ctx, cl, demo.Options{Pools: pools, Keys: keys, Seed: 1, Out: os.Stdout, DatabaseURL: dsn, Autoscaled: karpenter})
}

// startKarpenter runs Karpenter with its kwok provider as a component of the
// cluster, with the NodePools of manifests/karpenter, on a cluster that has
// no worker node of its own.
func startKarpenter(ctx context.Context, c *localcluster.Cluster, cl client.Client, root string) error {
	var nodes corev1.NodeList
	if err := cl.List(ctx, &nodes); err != nil {
		return err
	}
	for _, n := range nodes.Items {
		if _, ok := n.Labels["karpenter.sh/nodepool"]; !ok {
			return fmt.Errorf("node %s is not Karpenter's: the Karpenter demo starts with no worker nodes; run `make cluster-down`, then `make demo AUTOSCALER=karpenter`", n.Name)
		}
	}
	if running(c, "karpenter") {
		return nil
	}
	fmt.Println("starting Karpenter (kwok provider; NodePools spot-ssd, on-demand and gpu from manifests/karpenter) ...")
	// Emptied nodes go 30 s after they empty, all at once, not 5 minutes
	// after, a tenth at a time.
	if err := localcluster.InstallKarpenter(ctx, cl, c.Tools(), root, localcluster.KarpenterQuickConsolidation("30s")); err != nil {
		return err
	}
	ports, err := localcluster.FreePorts(2)
	if err != nil {
		return err
	}
	cmd := localcluster.KarpenterCommand(c.Tools(), root, c.Kubeconfig(), ports[0], ports[1])
	if err := c.StartComponent(ctx, "karpenter", "env", cmd...); err != nil {
		return err
	}
	if err := localcluster.WaitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[1]), 2*time.Minute); err != nil {
		return fmt.Errorf("karpenter: %w\n%s", err, c.ComponentLog("karpenter", 20))
	}
	return nil
}

// schedulerConfig writes berth-scheduler's shipped configuration, pointed
// at the cluster, into the cluster's folder.
func schedulerConfig(c *localcluster.Cluster, root string) (string, error) {
	raw, err := os.ReadFile(filepath.Join(root, "manifests", "scheduler", "berth-scheduler.yaml"))
	if err != nil {
		return "", err
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return "", fmt.Errorf("parse berth-scheduler.yaml: %w", err)
	}
	cfg["clientConnection"] = map[string]any{"kubeconfig": c.Kubeconfig(), "qps": 1000, "burst": 1000}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.Dir(), "berth-scheduler.yaml")
	return path, os.WriteFile(path, out, 0o644)
}

// running reports whether a component started earlier still runs.
func running(c *localcluster.Cluster, name string) bool {
	b, err := os.ReadFile(filepath.Join(c.Dir(), "pids", name+".pid"))
	if err != nil {
		return false
	}
	var pid int
	if _, err := fmt.Sscanf(string(b), "%d", &pid); err != nil {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}
