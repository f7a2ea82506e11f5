// Command berth-extender serves berth's placement decisions as an HTTP
// scheduler extender, for clusters that keep the stock kube-scheduler
// instead of running berth-scheduler. It answers POST /filter and POST
// /prioritize from an informer cache of Nodes and Pods; see
// manifests/scheduler/extender.yaml for the scheduler's side.
//
// It listens on 127.0.0.1:8888 by default, reachable only from its own
// host. In a cluster, where kube-scheduler calls it through a Service or as
// a sidecar, pass --bind-address 0.0.0.0:8888 (or the Pod IP).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"berth.dev/berth/plugins/config"
	"berth.dev/berth/plugins/placement"
)

func main() {
	var kubeconfig, bind, metricsBind, argsPath string
	var syncTimeout time.Duration
	flag.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig to reach the API server; empty uses the in-cluster config")
	flag.StringVar(&bind, "bind-address", "127.0.0.1:8888", "host:port serving /filter and /prioritize; use 0.0.0.0:8888 in a cluster")
	flag.StringVar(&metricsBind, "metrics-bind-address", "127.0.0.1:8889", "host:port of the Prometheus metrics; 0 turns them off")
	flag.StringVar(&argsPath, "config", "", "file with the BerthPlacement args (YAML: preset, keys, workspaceTargetPercent, buildScratchBytes, emptyNodeScore); empty uses the defaults")
	flag.DurationVar(&syncTimeout, "cache-sync-timeout", 2*time.Minute, "how long to wait for the first list of Nodes and Pods")
	klog.InitFlags(nil)
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx = klog.NewContext(ctx, klog.NewKlogr().WithName("berth-extender"))
	if err := run(ctx, kubeconfig, bind, metricsBind, argsPath, syncTimeout); err != nil {
		fmt.Fprintf(os.Stderr, "berth-extender: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, kubeconfig, bind, metricsBind, argsPath string, syncTimeout time.Duration) error {
	args, err := config.LoadArgs(argsPath)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	d, err := placement.NewDecider(args)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig: %w", err)
	}
	rc.UserAgent = "berth-extender"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("create client: %w", err)
	}
	nodes, err := placement.NewInformerNodes(cs)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h := placement.NewExtender(d, nodes).Handler(placement.HandlerOptions{
		Ready:   nodes.Synced,
		Metrics: placement.NewExtenderMetrics(reg),
	})

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return nodes.Start(ctx, syncTimeout) })
	g.Go(func() error { return placement.Serve(ctx, bind, h) })
	if metricsBind != "0" && metricsBind != "" {
		g.Go(func() error { return placement.Serve(ctx, metricsBind, placement.MetricsHandler(reg)) })
	}
	return g.Wait()
}
