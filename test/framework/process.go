package framework

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"berth.dev/berth/pkg/localcluster"
)

// StartProcess runs bin with args for the test, logging to a file of its
// own, and stops it when the test ends; the watchdog kills it if the test
// process dies first. It does not wait for the process to be ready: see
// WaitHealthy.
func StartProcess(t testing.TB, name, bin string, args []string) *Process {
	t.Helper()
	requireMain(t)
	dir, err := os.MkdirTemp(state.dir, name+"-")
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{Name: name, Log: filepath.Join(dir, "log")}
	p.start(t, bin, args)
	t.Cleanup(p.Stop)
	return p
}

// StartServer runs bin as a server the test reaches on n ports found free
// on 127.0.0.1: args builds its command line from the ports, and ready the
// URL that answers 200 once it serves (http, or https without verifying the
// certificate). A port taken between the look and the bind starts it again
// on other ports; any other failure, or no answer within a minute, fails
// the test with the end of its log. The process stops when the test ends.
func StartServer(t testing.TB, name, bin string, n int, args func(ports []int) []string, ready func(ports []int) string) (*Process, []int) {
	t.Helper()
	requireMain(t)
	var ports []int
	p := onFreePorts(t, name, func() (*Process, error) {
		var err error
		if ports, err = localcluster.FreePorts(n); err != nil {
			t.Fatal(err)
		}
		dir, err := os.MkdirTemp(state.dir, name+"-")
		if err != nil {
			t.Fatal(err)
		}
		p := &Process{Name: name, Log: filepath.Join(dir, "log")}
		p.start(t, bin, args(ports))
		if err := p.waitHealthy(t.Context(), ready(ports), time.Minute); err != nil {
			p.Stop()
			return p, fmt.Errorf("not ready: %w", err)
		}
		return p, nil
	})
	t.Cleanup(p.Stop)
	return p, ports
}

// Dir is a fresh directory for the test's files, removed at the package's
// teardown.
func Dir(t testing.TB, name string) string {
	t.Helper()
	requireMain(t)
	dir, err := os.MkdirTemp(state.dir, name+"-")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// FreePort returns a TCP port free on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// WaitHealthy waits until url answers 200 (https without verifying the
// certificate, as for a component's self-signed serving certificate), and
// fails the test with the end of the process's log if it exits first or
// timeout passes.
func (p *Process) WaitHealthy(t testing.TB, url string, timeout time.Duration) {
	t.Helper()
	if err := p.waitHealthy(t.Context(), url, timeout); err != nil {
		t.Fatalf("%s: %v\n%s", p.Name, err, p.Tail(40))
	}
}

// waitHealthy is WaitHealthy returning an error: the process exited, or url
// did not answer 200 within timeout.
func (p *Process) waitHealthy(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := localcluster.WaitHTTP(ctx, url, timeout)
	select {
	case <-p.done:
		return fmt.Errorf("exited")
	default:
		return err
	}
}
