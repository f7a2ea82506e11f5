// Package supervisor runs daemon-starting commands (kwokctl, pg_ctl) under a
// small keeper process that outlives the caller and reaps what they leave.
//
// kwokctl and pg_ctl start their servers detached and exit, so the servers are
// orphaned. On a machine whose init does not reap orphans (a container or a
// microVM), every server stopped later would stay behind as a zombie. The
// keeper is the caller's own binary re-executed: it makes itself a child
// subreaper (prctl PR_SET_CHILD_SUBREAPER), runs the command, hands its result
// back, and then reaps every process the command left until none is left.
//
// Any binary that imports this package can be the keeper: the package's init
// takes over when the process was started as one.
package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// envKeeper marks a process started as a keeper.
const envKeeper = "BERTH_SUPERVISOR_KEEPER"

func init() {
	if os.Getenv(envKeeper) == "1" {
		os.Exit(keep(os.Args[1:]))
	}
}

// result is what the keeper hands back to its caller on fd 3.
type result struct {
	Output []byte `json:"output"`
	Err    string `json:"err,omitempty"`
}

// Keeper is a running keeper process.
type Keeper struct {
	done chan struct{}
}

// Wait waits until the keeper has exited, which it does once every process
// it keeps has, or until timeout; it reports whether the keeper exited.
func (k *Keeper) Wait(timeout time.Duration) bool {
	select {
	case <-k.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Run runs name with args and env under a new keeper and returns the
// command's combined output. Processes the command leaves running are
// reaped by the keeper when they exit, whoever stops them; the keeper exits
// after the last of them. When ctx ends first, Run returns at once and the
// command runs on under its keeper.
func Run(ctx context.Context, env []string, name string, args ...string) (*Keeper, []byte, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("find own executable: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	cmd := exec.Command(self, append([]string{name}, args...)...)
	cmd.Env = append(append([]string{}, env...), envKeeper+"=1")
	cmd.ExtraFiles = []*os.File{w}
	// A session of its own: terminal signals aimed at the caller never reach
	// the keeper or the servers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, nil, fmt.Errorf("start keeper for %s: %w", name, err)
	}
	w.Close()
	// The keeper lives on, past this call. Reap it when it exits, should this
	// process still be there then.
	k := &Keeper{done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(k.done)
	}()
	type read struct {
		data []byte
		err  error
	}
	done := make(chan read, 1)
	go func() {
		data, err := io.ReadAll(r)
		done <- read{data, err}
	}()
	var data []byte
	var readErr error
	select {
	case <-ctx.Done():
		return k, nil, fmt.Errorf("%s: %w", name, ctx.Err())
	case got := <-done:
		data, readErr = got.data, got.err
	}
	var res result
	if err := json.Unmarshal(data, &res); err != nil {
		return k, nil, fmt.Errorf("keeper for %s gave no result (%v): %w", name, readErr, err)
	}
	if res.Err != "" {
		return k, res.Output, errors.New(res.Err)
	}
	return k, res.Output, nil
}

// keep is the keeper's body: run the command, report, then reap until no
// child is left.
func keep(argv []string) int {
	status := os.NewFile(3, "status")
	// The command and its servers must not hold the status pipe open, or the
	// caller would never read its end.
	unix.CloseOnExec(3)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		writeResult(status, nil, fmt.Errorf("become subreaper: %w", err))
		return 1
	}
	if len(argv) == 0 {
		writeResult(status, nil, errors.New("keeper started without a command"))
		return 2
	}
	env := make([]string, 0, len(os.Environ()))
	for _, kv := range os.Environ() {
		if !bytes.HasPrefix([]byte(kv), []byte(envKeeper+"=")) {
			env = append(env, kv)
		}
	}
	// Output goes to a file, not a pipe: a server the command leaves running
	// may keep the descriptor, and reading a pipe would wait for it.
	outFile, err := os.CreateTemp("", "berth-keeper-*.log")
	if err != nil {
		writeResult(status, nil, fmt.Errorf("create output file: %w", err))
		return 1
	}
	_ = os.Remove(outFile.Name())
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = outFile, outFile
	err = cmd.Run()
	_, _ = outFile.Seek(0, io.SeekStart)
	out, _ := io.ReadAll(outFile)
	outFile.Close()
	writeResult(status, out, err)

	devNull, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if devNull != nil {
		_ = unix.Dup2(int(devNull.Fd()), 0)
		_ = unix.Dup2(int(devNull.Fd()), 1)
		_ = unix.Dup2(int(devNull.Fd()), 2)
	}
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.ECHILD) {
			return 0
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return 1
		}
	}
}

func writeResult(f *os.File, out []byte, err error) {
	res := result{Output: out}
	if err != nil {
		res.Err = err.Error()
	}
	_ = json.NewEncoder(f).Encode(res)
	_ = f.Close()
}
