package framework

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// SchedulerConfig is berth-scheduler's shipped configuration, relative to the
// repository root.
const SchedulerConfig = "manifests/scheduler/berth-scheduler.yaml"

// StartScheduler runs berth-scheduler with the shipped configuration against
// the cluster, on 127.0.0.1, until the test ends. edit, when set, may change
// the configuration first (as a generic map).
func StartScheduler(t testing.TB, env *ClusterEnv, edit func(map[string]any)) *Process {
	t.Helper()
	p := startScheduler(t, env, edit)
	t.Cleanup(p.Stop)
	return p
}

func startScheduler(t testing.TB, env *ClusterEnv, edit func(map[string]any)) *Process {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(state.root, SchedulerConfig))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("parse %s: %v", SchedulerConfig, err)
	}
	cfg["clientConnection"] = map[string]any{"kubeconfig": env.Kubeconfig(), "qps": 5000, "burst": 5000}
	if edit != nil {
		edit(cfg)
	}
	return runScheduler(t, "berth-scheduler", Binary(t, "berth-scheduler"), cfg)
}

// StartStockScheduler runs the stock kube-scheduler of the tool cache with
// its default profile (schedulerName default-scheduler) until the test
// ends, started as StartScheduler starts berth-scheduler: the same client
// limits, leader election, verbosity and pprof path, so that a benchmark
// compares the two schedulers and nothing else. The package's cluster must
// run none of its own (WithoutStockScheduler).
func StartStockScheduler(t testing.TB, env *ClusterEnv) *Process {
	t.Helper()
	requireMain(t)
	if !state.opts.noStockScheduler {
		t.Fatal("framework: StartStockScheduler needs framework.Main(m, framework.WithoutStockScheduler()): the cluster runs one already")
	}
	cfg := map[string]any{
		"apiVersion":       "kubescheduler.config.k8s.io/v1",
		"kind":             "KubeSchedulerConfiguration",
		"clientConnection": map[string]any{"kubeconfig": env.Kubeconfig(), "qps": 5000, "burst": 5000},
		"leaderElection":   map[string]any{"leaderElect": true, "resourceName": "kube-scheduler", "resourceNamespace": "kube-system"},
	}
	p := runScheduler(t, "kube-scheduler", env.Tools.KubeScheduler, cfg)
	t.Cleanup(p.Stop)
	return p
}

// runScheduler runs a scheduler binary with the configuration cfg on
// 127.0.0.1 and waits until it is healthy.
func runScheduler(t testing.TB, name, bin string, cfg map[string]any) *Process {
	t.Helper()
	dir, err := os.MkdirTemp(state.dir, name+"-")
	if err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return onFreePorts(t, name, func() (*Process, error) {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		base := fmt.Sprintf("https://127.0.0.1:%d", port)
		p := &Process{Name: name, Health: base, Metrics: base, Log: filepath.Join(dir, "log")}
		// pprof and metrics are open, on 127.0.0.1 only, so benchmarks can
		// profile the scheduler (Process.Profile) and read its counters
		// (Process.MetricValue).
		p.start(t, bin, []string{"--config", path, "--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(port), "--v", "1",
			"--authorization-always-allow-paths", "/healthz,/readyz,/livez,/metrics,/debug/pprof/*"})
		if err := p.waitHealthy(t.Context(), p.Health+"/healthz", time.Minute); err != nil {
			p.Stop()
			return p, fmt.Errorf("not healthy: %w", err)
		}
		return p, nil
	})
}

// localHTTP reaches the test processes' servers on 127.0.0.1, whose
// serving certificates are self-signed.
var localHTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // test processes on 127.0.0.1

// StartPackageScheduler is StartScheduler for a scheduler the package's
// tests share: it is stopped at the package's teardown.
func StartPackageScheduler(t testing.TB, env *ClusterEnv, edit func(map[string]any)) *Process {
	t.Helper()
	p := startScheduler(t, env, edit)
	state.mu.Lock()
	onTeardown("", p.Stop)
	state.mu.Unlock()
	return p
}

// Profile writes a CPU profile of the process over d to path, from the
// pprof handler on its Health address.
func (p *Process) Profile(ctx context.Context, d time.Duration, path string) error {
	url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", p.Health, int(d.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := localHTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
