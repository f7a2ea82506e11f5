package framework

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// watchdog is a shell process, outside this process's group, that waits for
// this process to exit and then runs a cleanup script. The script holds one
// command per started part; normal teardown empties it first. It catches what
// Go cannot: SIGKILL, and the panic of a test that runs past -timeout.
type watchdog struct {
	mu     sync.Mutex
	script string
	cmd    *exec.Cmd
}

// The loop also ends when teardown removes the script, so stop never has to
// kill it (which would orphan its sleep).
const watchdogLoop = `while kill -0 "$0" 2>/dev/null && [ -f "$1" ]; do sleep 0.2; done
if [ -f "$1" ]; then bash "$1"; rm -f "$1"; fi`

func startWatchdog(script string) (*watchdog, error) {
	if err := os.WriteFile(script, []byte("#!/usr/bin/env bash\n"), 0o700); err != nil {
		return nil, fmt.Errorf("write cleanup script: %w", err)
	}
	cmd := exec.Command("bash", "-c", watchdogLoop, strconv.Itoa(os.Getpid()), script)
	// Its own process group: an interrupt from the terminal reaches the
	// tests, which tear down, and not the watchdog.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	return &watchdog{script: script, cmd: cmd}, nil
}

// add appends a cleanup command to the script.
func (w *watchdog) add(line string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f, err := os.OpenFile(w.script, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "( %s ) >/dev/null 2>&1\n", line)
}

// stop ends the watchdog without running the script: teardown has done its
// work.
func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = os.Remove(w.script)
	done := make(chan struct{})
	go func() { _ = w.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}
