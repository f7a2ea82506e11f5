package framework

import (
	"fmt"
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
	bin := Binary(t, "berth-scheduler")
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
	dir, err := os.MkdirTemp(state.dir, "berth-scheduler-")
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
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{Name: "berth-scheduler", Health: fmt.Sprintf("https://127.0.0.1:%d", port), Log: filepath.Join(dir, "log")}
	p.start(t, bin, []string{"--config", path, "--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(port), "--v", "1"})
	if err := p.waitHealthy(t.Context(), p.Health+"/healthz", time.Minute); err != nil {
		p.Stop()
		t.Fatalf("berth-scheduler not healthy: %v\n%s", err, p.Tail(40))
	}
	return p
}

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
