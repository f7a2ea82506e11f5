package framework

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"berth.dev/berth/pkg/localcluster"
)

// binaries holds berth binaries built once per test process.
var binaries struct {
	mu    sync.Mutex
	built map[string]string
}

// Binary builds ./cmd/<name> once per test process and returns its path.
func Binary(t testing.TB, name string) string {
	t.Helper()
	requireMain(t)
	binaries.mu.Lock()
	defer binaries.mu.Unlock()
	if p, ok := binaries.built[name]; ok {
		return p
	}
	out := filepath.Join(state.dir, "bin", name)
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = state.root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, b)
	}
	if binaries.built == nil {
		binaries.built = map[string]string{}
	}
	binaries.built[name] = out
	return out
}

// Process is a berth binary running for a test.
type Process struct {
	Name    string
	Metrics string // http://host:port of its /metrics
	Health  string // http://host:port of its /healthz and /readyz
	Webhook string // host:port of its webhook server
	URL     string // https base URL of its webhook server, as registered
	Log     string // path of its log
	CertDir string // its serving certificate and CA (ca.crt), berth-manager only

	cmd  *exec.Cmd
	done chan struct{}
}

// ManagerOptions start a berth-manager.
type ManagerOptions struct {
	// Args are extra flags; they win over the defaults.
	Args []string
	// WebhookURL is the base URL the API server is told to call; default
	// https://localhost:<its webhook port>.
	WebhookURL string
	// WebhookPort is the port to serve webhooks on; 0 picks a free one.
	WebhookPort int
}

// StartManager starts berth-manager against the cluster, serving webhooks on
// 127.0.0.1, and waits until it is ready and the API server trusts its
// certificate. It is stopped when the test ends.
func StartManager(t testing.TB, env *ClusterEnv, o ManagerOptions) *Process {
	t.Helper()
	p := startManager(t, env, o)
	t.Cleanup(p.Stop)
	return p
}

func startManager(t testing.TB, env *ClusterEnv, o ManagerOptions) *Process {
	t.Helper()
	return onFreePorts(t, "berth-manager", func() (*Process, error) { return tryStartManager(t, env, o) })
}

// onFreePorts returns the process try starts on ports found free. A port
// found free may be taken before the process binds it (by an outgoing
// connection, or a test in another package): then the process exits at
// once, and try is run again, on other ports. Any other failure of try
// fails the test, with the end of the process's log.
func onFreePorts(t testing.TB, name string, try func() (*Process, error)) *Process {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p, err := try()
		if err == nil {
			return p
		}
		tail := p.Tail(40)
		if attempt < 3 && strings.Contains(tail, "address already in use") {
			t.Logf("%s could not bind a port; starting it on other ports: %v", name, err)
			continue
		}
		t.Fatalf("%s: %v\n%s", name, err, tail)
	}
}

// tryStartManager starts berth-manager on ports found free and waits until
// it is ready; on an error the process is stopped, and its log kept.
func tryStartManager(t testing.TB, env *ClusterEnv, o ManagerOptions) (*Process, error) {
	t.Helper()
	bin := Binary(t, "berth-manager")
	ports := make([]int, 3)
	for i := range ports {
		var err error
		if ports[i], err = freePort(); err != nil {
			t.Fatal(err)
		}
	}
	if o.WebhookPort != 0 {
		ports[0] = o.WebhookPort
	}
	if o.WebhookURL == "" {
		o.WebhookURL = fmt.Sprintf("https://localhost:%d", ports[0])
	}
	dir, err := os.MkdirTemp(state.dir, "berth-manager-")
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{
		Name:    "berth-manager",
		Webhook: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		URL:     o.WebhookURL,
		Metrics: fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		Health:  fmt.Sprintf("http://127.0.0.1:%d", ports[2]),
		Log:     filepath.Join(dir, "log"),
		CertDir: filepath.Join(dir, "certs"),
	}
	args := append([]string{
		"--kubeconfig", env.Kubeconfig(),
		"--webhook-bind-address", p.Webhook,
		"--webhook-url", o.WebhookURL,
		"--metrics-bind-address", strings.TrimPrefix(p.Metrics, "http://"),
		"--health-probe-bind-address", strings.TrimPrefix(p.Health, "http://"),
		"--cert-dir", p.CertDir,
	}, o.Args...)
	p.start(t, bin, args)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	if err := p.waitHealthy(ctx, p.Health+"/readyz", 90*time.Second); err != nil {
		p.Stop()
		return p, fmt.Errorf("not ready: %w", err)
	}
	if err := localcluster.WaitWebhookCA(ctx, env.Client, 90*time.Second); err != nil {
		p.Stop()
		return p, fmt.Errorf("webhook CA not injected: %w", err)
	}
	return p, nil
}

// start runs bin with args, logging to p.Log; the watchdog kills it if this
// process dies first.
func (p *Process) start(t testing.TB, bin string, args []string) {
	t.Helper()
	log, err := os.Create(p.Log)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	p.done = make(chan struct{})
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.Name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	state.watchdog.add(fmt.Sprintf("kill -9 %d", p.cmd.Process.Pid))
}

// PID is the process's id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Stop stops the process and waits for it.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Tail returns the last n lines of the process's log.
func (p *Process) Tail(n int) string {
	f, err := os.Open(p.Log)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// MetricValue sums a counter or gauge of the process's /metrics over all
// label sets that contain every one of the given label pairs ("k=\"v\"").
func (p *Process) MetricValue(name string, labels ...string) (float64, error) {
	resp, err := localHTTP.Get(p.Metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		var v float64
		if _, err := fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v); err == nil {
			sum += v
		}
	}
	return sum, sc.Err()
}

// StartPackageManager is StartManager for a process the package's tests
// share: it is stopped at the package's teardown, not the test's end.
func StartPackageManager(t testing.TB, env *ClusterEnv, o ManagerOptions) *Process {
	t.Helper()
	p := startManager(t, env, o)
	state.mu.Lock()
	onTeardown("", p.Stop)
	state.mu.Unlock()
	return p
}
