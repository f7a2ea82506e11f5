package extender

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/test/framework"
)

// ExtenderConfig is the shipped KubeSchedulerConfiguration of a stock
// kube-scheduler using berth-extender, relative to the repository root.
const ExtenderConfig = "manifests/scheduler/extender.yaml"

// extenderSchedulerName is the stock scheduler's profile in this test: the
// shipped file's is berth-scheduler, which berth-scheduler itself holds
// here.
const extenderSchedulerName = "berth-extender-scheduler"

// setup starts berth-manager (Pods keep the schedulerName they are created
// with), berth-scheduler, berth-extender and a stock kube-scheduler using it,
// once no Pod of an earlier test is left on the pools' nodes. It returns the
// extender's process and URL.
func setup(t *testing.T) (*framework.ClusterEnv, *framework.Process, string) {
	t.Helper()
	env := framework.Cluster(t)
	framework.Eventually(t, 60*time.Second, "no Pods of earlier tests on the pools' nodes", func(ctx context.Context) (bool, error) {
		var pods corev1.PodList
		if err := env.Client.List(ctx, &pods); err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Spec.NodeName != "" && p.Namespace != metav1.NamespaceSystem {
				return false, nil
			}
		}
		return true, nil
	})
	framework.StartManager(t, env, framework.ManagerOptions{Args: []string{"--scheduler-name=", "--controllers="}})
	framework.StartScheduler(t, env, nil)
	ext, url := startExtender(t, env)
	startStockScheduler(t, env, url)
	return env, ext, url
}

// startExtender runs berth-extender with the default args and waits until
// its cache has synced.
func startExtender(t *testing.T, env *framework.ClusterEnv) (p *framework.Process, url string) {
	t.Helper()
	p, ports := framework.StartServer(t, "berth-extender", framework.Binary(t, "berth-extender"), 2,
		func(ports []int) []string {
			return []string{"--kubeconfig", env.Kubeconfig(), "--bind-address", fmt.Sprintf("127.0.0.1:%d", ports[0]),
				"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[1]), "--v", "1"}
		},
		func(ports []int) string { return fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[0]) })
	url = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	p.Metrics = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	p.Health = url
	return p, url
}

// startStockScheduler runs the stock kube-scheduler with the shipped
// extender configuration, changed only to run beside berth-scheduler: its
// own schedulerName, no leader election, and the extender's test address.
func startStockScheduler(t *testing.T, env *framework.ClusterEnv, extenderURL string) *framework.Process {
	t.Helper()
	cfg := readConfig(t)
	cfg["leaderElection"] = map[string]any{"leaderElect": false}
	cfg["clientConnection"] = map[string]any{"kubeconfig": env.Kubeconfig(), "qps": 5000, "burst": 5000}
	profiles := cfg["profiles"].([]any)
	if len(profiles) != 1 {
		t.Fatalf("%s: want one profile, got %d", ExtenderConfig, len(profiles))
	}
	profiles[0].(map[string]any)["schedulerName"] = extenderSchedulerName
	extenders := cfg["extenders"].([]any)
	if len(extenders) != 1 {
		t.Fatalf("%s: want one extender, got %d", ExtenderConfig, len(extenders))
	}
	extenders[0].(map[string]any)["urlPrefix"] = extenderURL

	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(framework.Dir(t, "kube-scheduler"), "config.yaml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	p, ports := framework.StartServer(t, "kube-scheduler", env.Tools.KubeScheduler, 1,
		func(ports []int) []string {
			return []string{"--config", path, "--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(ports[0]), "--v", "1"}
		},
		func(ports []int) string { return fmt.Sprintf("https://127.0.0.1:%d/healthz", ports[0]) })
	p.Health = fmt.Sprintf("https://127.0.0.1:%d", ports[0])
	return p
}

func readConfig(t *testing.T) map[string]any {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, err := localcluster.RepoRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, ExtenderConfig))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("parse %s: %v", ExtenderConfig, err)
	}
	return cfg
}
