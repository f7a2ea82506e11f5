package localcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"berth.dev/berth/manifests"
	"berth.dev/berth/pkg/supervisor"
)

// Options says how to create a cluster.
type Options struct {
	// Name is the cluster's name; it must be unique within WorkDir.
	Name string
	// WorkDir holds the cluster's files (kwokctl's KWOK_WORKDIR).
	WorkDir string
	// Tools are the binaries to run.
	Tools Tools
	// SchedulerConfig, when set, is a KubeSchedulerConfiguration file for the
	// stock kube-scheduler.
	SchedulerConfig string
	// DisableScheduler starts no kube-scheduler, for tests that bring their own.
	DisableScheduler bool
	// ExtraArgs are passed as kwokctl --extra-args, each component=key=value.
	ExtraArgs []string
	// MetricsServer runs metrics-server (Tools.MetricsServer), so that
	// metrics.k8s.io serves the use the kwok controller reports: a Pod's
	// kwok.x-k8s.io/usage-cpu and usage-memory annotations, else 1m and 1Mi.
	MetricsServer bool
}

// Cluster is a running local cluster.
type Cluster struct {
	Name    string
	WorkDir string
	tools   Tools
	keeper  *supervisor.Keeper // set when this process created the cluster
}

// Tools are the binaries the cluster was created or opened with.
func (c *Cluster) Tools() Tools { return c.tools }

// Dir is the folder kwokctl keeps the cluster's files in.
func (c *Cluster) Dir() string { return filepath.Join(c.WorkDir, "clusters", c.Name) }

// Kubeconfig is the path of an admin kubeconfig for the cluster, whose server
// is on 127.0.0.1.
func (c *Cluster) Kubeconfig() string { return filepath.Join(c.Dir(), "kubeconfig.yaml") }

// Open returns a handle on a cluster created earlier, or an error when there
// is none of that name.
func Open(name, workDir string, tools Tools) (*Cluster, error) {
	c := &Cluster{Name: name, WorkDir: workDir, tools: tools}
	if _, err := os.Stat(filepath.Join(c.Dir(), "kwok.yaml")); err != nil {
		return nil, fmt.Errorf("no local cluster %q in %s: %w", name, workDir, err)
	}
	return c, nil
}

// Create starts a cluster: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler (unless disabled) and the kwok controller, each on a free
// port on 127.0.0.1, and waits until the API server is healthy. A cluster
// that fails to start is deleted again.
func Create(ctx context.Context, opts Options) (*Cluster, error) {
	if err := opts.Tools.Check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("create work dir: %w", err)
	}
	c := &Cluster{Name: opts.Name, WorkDir: opts.WorkDir, tools: opts.Tools}
	if _, err := os.Stat(c.Dir()); err == nil {
		return nil, fmt.Errorf("local cluster %q already exists in %s; run `make cluster-down` (or delete it) first", opts.Name, c.Dir())
	}
	ports, err := FreePorts(7)
	if err != nil {
		return nil, err
	}
	var manifestsDir string
	if opts.MetricsServer {
		// kwokctl would fetch metrics-server's manifest from GitHub; give it
		// berth's, as a local kustomization.
		manifestsDir = filepath.Join(opts.WorkDir, opts.Name+"-metrics-server")
		if err := os.CopyFS(manifestsDir, manifests.MetricsServer()); err != nil {
			return nil, fmt.Errorf("write metrics-server manifests: %w", err)
		}
	}
	stages, err := kwokStages()
	if err != nil {
		return nil, err
	}
	config := filepath.Join(opts.WorkDir, opts.Name+"-kwokctl.yaml")
	if err := os.WriteFile(config, append(kwokctlConfig(ports, manifestsDir), stages...), 0o644); err != nil {
		return nil, fmt.Errorf("write kwokctl config: %w", err)
	}
	args := []string{
		"create", "cluster",
		"--name", opts.Name,
		"--runtime", "binary",
		"--config", config,
		"--kubeconfig", "",
		"--kube-apiserver-binary", opts.Tools.KubeAPIServer,
		"--kube-controller-manager-binary", opts.Tools.KubeControllerManager,
		"--kube-scheduler-binary", opts.Tools.KubeScheduler,
		"--etcd-binary", opts.Tools.Etcd,
		"--kwok-controller-binary", opts.Tools.Kwok,
		"--wait", "90s",
	}
	if opts.SchedulerConfig != "" {
		args = append(args, "--kube-scheduler-config", opts.SchedulerConfig)
	}
	if opts.DisableScheduler {
		args = append(args, "--disable", "kube-scheduler")
	}
	if opts.MetricsServer {
		if opts.Tools.MetricsServer == "" {
			return nil, errors.New("no metrics-server binary in the tool cache; run make tools")
		}
		args = append(args, "--enable", "metrics-server", "--metrics-server-binary", opts.Tools.MetricsServer)
	}
	for _, a := range opts.ExtraArgs {
		args = append(args, "--extra-args", a)
	}
	klog.FromContext(ctx).V(1).Info("creating local cluster", "name", opts.Name, "apiServerPort", ports[0])
	// kwokctl starts the components detached and exits. Run it under a
	// keeper, which reaps them once they are stopped.
	keeper, out, err := supervisor.Run(ctx, c.kwokctlEnv(), c.tools.Kwokctl, args...)
	c.keeper = keeper
	if err != nil {
		err = fmt.Errorf("kwokctl create cluster: %w\n%s", err, out)
		_ = c.Delete(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("create local cluster %q: %w", opts.Name, err)
	}
	// kwokctl logs a failed wait without failing, so check health ourselves.
	if err := c.waitHealthy(ctx, 90*time.Second); err != nil {
		_ = c.Delete(context.WithoutCancel(ctx))
		return nil, err
	}
	if opts.MetricsServer {
		// metrics.k8s.io answers only once metrics-server runs and the API
		// server reaches it. Without this wait, whatever reads it first
		// would wait out its own timeout, with no word of why.
		if err := c.waitAvailable(ctx, "v1beta1.metrics.k8s.io", 90*time.Second); err != nil {
			_ = c.Delete(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	return c, nil
}

// waitAvailable waits until the API server reports the APIService name
// Available, and otherwise says why not.
func (c *Cluster) waitAvailable(ctx context.Context, name string, timeout time.Duration) error {
	jsonpath := `jsonpath={range .status.conditions[?(@.type=="Available")]}{.status}: {.message}{end}`
	last, err := c.pollKubectl(ctx, timeout, func(out string) bool { return strings.HasPrefix(out, "True") },
		"get", "apiservice", name, "-o", jsonpath)
	if err != nil {
		return fmt.Errorf("local cluster %q: APIService %s not available after %s (logs in %s/logs): %w: %s", c.Name, name, timeout, c.Dir(), err, last)
	}
	return nil
}

// Delete stops every process of the cluster and removes its files. Deleting a
// cluster that is already gone is not an error.
func (c *Cluster) Delete(ctx context.Context) error {
	if _, err := os.Stat(c.Dir()); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	// Read the pids first: kwokctl removes the folder, berth's own
	// components' pid files with it.
	pids := c.PIDs()
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	// kwokctl refuses an empty --kubeconfig on delete; give it a file it
	// owns so it never edits the user's kubeconfig.
	err := c.kwokctl(ctx, "delete", "cluster", "--name", c.Name,
		"--kubeconfig", filepath.Join(c.WorkDir, c.Name+"-unused-kubeconfig"))
	// Make sure: kill whatever is left, a half-made cluster's included.
	for _, pid := range append(pids, c.PIDs()...) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if c.keeper != nil {
		c.keeper.Wait(10 * time.Second)
	}
	_ = os.RemoveAll(c.Dir())
	_ = os.RemoveAll(c.postgresDir())
	_ = os.Remove(filepath.Join(c.WorkDir, c.Name+"-kwokctl.yaml"))
	_ = os.RemoveAll(filepath.Join(c.WorkDir, c.Name+"-metrics-server"))
	_ = os.Remove(filepath.Join(c.WorkDir, c.Name+"-unused-kubeconfig"))
	if err != nil {
		return fmt.Errorf("delete local cluster %q: %w", c.Name, err)
	}
	return nil
}

// PID returns the process id of one of the cluster's components, such as
// kube-scheduler, from kwokctl's pid file.
func (c *Cluster) PID(component string) (int, error) {
	return readPID(filepath.Join(c.Dir(), "pids", component+".pid"))
}

// PIDs returns the process ids of the cluster's running components.
func (c *Cluster) PIDs() []int {
	files, _ := filepath.Glob(filepath.Join(c.Dir(), "pids", "*.pid"))
	var pids []int
	for _, f := range files {
		if pid, err := readPID(f); err == nil && pid > 1 && syscall.Kill(pid, 0) == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

func readPID(file string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("pid file %s: %w", file, err)
	}
	return pid, nil
}

// CleanupCommand is a shell command that deletes the cluster; it is run by a
// watchdog when the process that created the cluster dies without doing so.
func (c *Cluster) CleanupCommand() string {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	return fmt.Sprintf("PATH=%s:$PATH KWOK_WORKDIR=%s %s delete cluster --name %s --kubeconfig %s >/dev/null 2>&1; "+
		"for f in %s/pids/*.pid; do [ -f \"$f\" ] && kill -9 \"$(cat \"$f\")\" 2>/dev/null; done; rm -rf %s",
		q(filepath.Dir(c.tools.Kubectl)), q(c.WorkDir), q(c.tools.Kwokctl), q(c.Name),
		q(filepath.Join(c.WorkDir, c.Name+"-unused-kubeconfig")), q(c.Dir()), q(c.Dir()))
}

func (c *Cluster) kwokctl(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, c.tools.Kwokctl, args...)
	cmd.Env = c.kwokctlEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kwokctl %s: %w\n%s", strings.Join(args[:2], " "), err, out)
	}
	return nil
}

func (c *Cluster) kwokctlEnv() []string {
	return append(os.Environ(),
		"KWOK_WORKDIR="+c.WorkDir,
		// kwokctl looks for kubectl on PATH before it would download one.
		"PATH="+filepath.Dir(c.tools.Kubectl)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"KWOK_KUBECTL_BINARY="+c.tools.Kubectl,
	)
}

func (c *Cluster) waitHealthy(ctx context.Context, timeout time.Duration) error {
	last, err := c.pollKubectl(ctx, timeout, func(out string) bool { return strings.TrimSpace(out) == "ok" },
		"get", "--raw", "/readyz")
	if err != nil {
		return fmt.Errorf("local cluster %q API server not ready after %s (logs in %s/logs): %w: %s", c.Name, timeout, c.Dir(), err, last)
	}
	return nil
}

// pollKubectl runs kubectl with args on the cluster every 250ms until it
// succeeds with an output done accepts, or timeout passes; then it returns
// the last output with the error.
func (c *Cluster) pollKubectl(ctx context.Context, timeout time.Duration, done func(string) bool, args ...string) (string, error) {
	deadline := time.Now().Add(timeout)
	var last []byte
	for time.Now().Before(deadline) {
		out, err := exec.CommandContext(ctx, c.tools.Kubectl, append([]string{"--kubeconfig", c.Kubeconfig()}, args...)...).CombinedOutput()
		if err == nil && done(string(out)) {
			return "", nil
		}
		last = out
		select {
		case <-ctx.Done():
			return string(last), ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return string(last), errors.New("timed out")
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1. The listeners are
// held until all are chosen so the kernel never hands out one twice.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// kwokctlConfig pins every component's port and binds them to 127.0.0.1.
// kwokctl's own port picker is not safe for clusters created in parallel.
// metricsServerManifests, when set, is the kustomization applied for
// metrics-server.
func kwokctlConfig(p []int, metricsServerManifests string) []byte {
	extra := ""
	if metricsServerManifests != "" {
		extra = fmt.Sprintf("  metricsServerManifests: [%q]\n", metricsServerManifests)
	}
	return fmt.Appendf(nil, `apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  bindAddress: 127.0.0.1
  kubeApiserverPort: %d
  etcdPort: %d
  etcdPeerPort: %d
  kubeControllerManagerPort: %d
  kubeSchedulerPort: %d
  kwokControllerPort: %d
  metricsServerPort: %d
  disableQPSLimits: true
%s`, p[0], p[1], p[2], p[3], p[4], p[5], p[6], extra)
}
