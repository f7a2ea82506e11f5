package framework

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Azurite's well-known development account.
const (
	AzuriteAccount = "devstoreaccount1"
	AzuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Azurite is Azurite's blob service on 127.0.0.1, storing into a temp dir.
// Stop and Start let a test take it away mid-transfer and bring it back with
// the same port and data.
type Azurite struct {
	Port int
	dir  string
	bin  string
	cmd  *exec.Cmd
}

// AzuriteServer returns the package's Azurite, starting it on first use.
func AzuriteServer(t testing.TB) *Azurite {
	t.Helper()
	requireMain(t)
	state.mu.Lock()
	defer state.mu.Unlock()
	if state.azurite == nil && state.azuriteErr == nil {
		state.azurite, state.azuriteErr = startAzurite(t.Context())
	}
	if state.azuriteErr != nil {
		t.Fatalf("framework: start Azurite: %v", state.azuriteErr)
	}
	return state.azurite
}

func startAzurite(ctx context.Context) (*Azurite, error) {
	if _, err := os.Stat(state.tools.AzuriteBlob); err != nil {
		return nil, fmt.Errorf("azurite-blob not found at %s; run `make tools`", state.tools.AzuriteBlob)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	a := &Azurite{Port: port, dir: filepath.Join(state.dir, "azurite"), bin: state.tools.AzuriteBlob}
	if err := os.MkdirAll(a.dir, 0o755); err != nil {
		return nil, err
	}
	onTeardown("", func() { a.Stop() })
	if err := a.Start(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// BlobEndpoint is the account's blob service URL.
func (a *Azurite) BlobEndpoint() string {
	return fmt.Sprintf("http://127.0.0.1:%d/%s", a.Port, AzuriteAccount)
}

// ConnectionString is a storage connection string for the account.
func (a *Azurite) ConnectionString() string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;",
		AzuriteAccount, AzuriteKey, a.BlobEndpoint())
}

// Start starts Azurite, or starts it again after Stop, and waits until it
// listens.
func (a *Azurite) Start(ctx context.Context) error {
	if a.cmd != nil {
		return nil
	}
	log, err := os.OpenFile(filepath.Join(a.dir, "azurite.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(a.bin, "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(a.Port),
		"--location", filepath.Join(a.dir, "data"), "--skipApiVersionCheck", "--loose", "--silent")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start azurite: %w", err)
	}
	a.cmd = cmd
	// Node forks nothing here, but kill the whole group to be sure.
	state.watchdog.add(fmt.Sprintf("kill -9 -%d", cmd.Process.Pid))
	if err := waitListening(ctx, fmt.Sprintf("127.0.0.1:%d", a.Port), 30*time.Second); err != nil {
		a.Stop()
		return fmt.Errorf("azurite: %w (log in %s)", err, filepath.Join(a.dir, "azurite.log"))
	}
	return nil
}

// Stop stops Azurite, as an outage would: connections are refused from then
// on. Its data is flushed and stays for Start.
func (a *Azurite) Stop() {
	if a.cmd == nil {
		return
	}
	done := make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(done) }()
	_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	a.cmd = nil
}
