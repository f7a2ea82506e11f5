// Package framework gives berth's integration tests the real parts they run
// on: a local cluster (real kube-apiserver, controller manager and scheduler
// with fake kwok nodes), a private PostgreSQL and Azurite.
//
// A test package calls Main from TestMain once; each test then asks for what
// it needs, and the first test to ask starts it for the whole package:
//
//	func TestMain(m *testing.M) { framework.Main(m) }
//
//	func TestX(t *testing.T) {
//		env := framework.Cluster(t)
//		ns := env.Namespace(t, "team-a")
//		...
//	}
//
// Everything started is torn down when the package's tests end, when the test
// binary is interrupted, and, through a watchdog process, when it is killed or
// times out. Names and ports are unique per test process, so packages run in
// parallel never collide.
package framework

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"berth.dev/berth/pkg/localcluster"
)

// Option changes what Main starts.
type Option func(*options)

type options struct {
	pools            map[string]int
	admissionOnly    bool
	metricsServer    bool
	noStockScheduler bool
}

// WithMetricsServer runs metrics-server in the package's cluster, so that
// metrics.k8s.io serves the use kwok reports for each Pod: its
// kwok.x-k8s.io/usage-cpu annotation, else 1m.
func WithMetricsServer() Option {
	return func(o *options) { o.metricsServer = true }
}

// WithAdmissionOnly starts the package's cluster with no kube-scheduler and
// a kube-controller-manager that runs only the service account controllers
// (a namespace needs its default ServiceAccount before it admits Pods). A
// benchmark of the admission path then measures that path, not the
// controllers' reaction to its Pods on the same cores.
func WithAdmissionOnly() Option {
	return func(o *options) { o.admissionOnly = true }
}

// WithoutStockScheduler starts the package's cluster with no kube-scheduler
// of its own, for benchmarks that run the stock one with StartStockScheduler,
// started as berth-scheduler is.
func WithoutStockScheduler() Option {
	return func(o *options) { o.noStockScheduler = true }
}

// WithPoolSizes sets how many fake nodes each pool of
// manifests/local-cluster/pools.yaml gets in the package's cluster; pools not
// named get DefaultPoolSizes' count.
func WithPoolSizes(sizes map[string]int) Option {
	return func(o *options) {
		for k, v := range sizes {
			o.pools[k] = v
		}
	}
}

// DefaultPoolSizes are the pool sizes of a test cluster: small, but every pool
// has more than one node.
func DefaultPoolSizes() map[string]int {
	return map[string]int{"spot-ssd": 3, "on-demand": 2, "gpu": 2}
}

// state is the package-wide set of started parts.
var state struct {
	mu       sync.Mutex
	opts     options
	dir      string // temp dir of everything this process starts
	root     string // repository root
	tools    localcluster.Tools
	watchdog *watchdog
	cleanups []func() // run in reverse order at teardown
	started  bool

	cluster     *ClusterEnv
	clusterErr  error
	postgres    *Postgres
	postgresErr error
	azurite     *Azurite
	azuriteErr  error
	// azuriteOAuth is a second Azurite, on HTTPS with Azure AD tokens.
	azuriteOAuth    *Azurite
	azuriteOAuthErr error
	// berthOnce starts berth beside the local cluster for Berth.
	berthOnce sync.Once
	// provided is the cluster E2E_PROVIDER=kind names.
	provided    *ClusterEnv
	providedErr error
}

// Main runs the package's tests and tears down what they started. Call it from
// TestMain.
func Main(m *testing.M, opts ...Option) {
	state.opts = options{pools: DefaultPoolSizes()}
	for _, o := range opts {
		o(&state.opts)
	}
	if err := setup(); err != nil {
		fmt.Fprintf(os.Stderr, "framework: %v\n", err)
		os.Exit(1)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "framework: %v: tearing down\n", s)
		teardown()
		os.Exit(130)
	}()
	code := m.Run()
	signal.Stop(sigs)
	teardown()
	os.Exit(code)
}

func setup() error {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	if state.root, err = localcluster.RepoRoot(wd); err != nil {
		return err
	}
	if state.tools, err = localcluster.LocateTools(context.Background(), state.root); err != nil {
		return err
	}
	if state.dir, err = os.MkdirTemp("", "berth-test-"); err != nil {
		return err
	}
	// Others (the postgres user) must reach files below it.
	if err := os.Chmod(state.dir, 0o755); err != nil {
		return err
	}
	state.watchdog, err = startWatchdog(filepath.Join(state.dir, "cleanup.sh"))
	if err != nil {
		return err
	}
	state.started = true
	return nil
}

func teardown() {
	state.mu.Lock()
	defer state.mu.Unlock()
	if !state.started {
		return
	}
	state.started = false
	for i := len(state.cleanups) - 1; i >= 0; i-- {
		state.cleanups[i]()
	}
	state.cleanups = nil
	state.watchdog.stop()
	_ = os.RemoveAll(state.dir)
}

// onTeardown registers f to run at teardown and shell, a command that undoes
// the same thing, for the watchdog to run if this process dies first.
// state.mu must be held.
func onTeardown(shell string, f func()) {
	state.cleanups = append(state.cleanups, f)
	if shell != "" {
		state.watchdog.add(shell)
	}
}

func requireMain(t testing.TB) {
	t.Helper()
	if !state.started {
		t.Fatal("framework: call framework.Main(m) from the package's TestMain")
	}
}

// uniqueName is a name no other test process on this machine uses at once.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, os.Getpid())
}
