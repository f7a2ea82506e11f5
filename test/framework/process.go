package framework

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
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
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	hc := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	for {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited:\n%s", p.Name, p.Tail(40))
		case <-ctx.Done():
			t.Fatalf("%s not healthy at %s: %v\n%s", p.Name, url, ctx.Err(), p.Tail(40))
		case <-time.After(100 * time.Millisecond):
		}
	}
}
