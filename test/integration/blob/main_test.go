// Package blob tests berth-blob against a real Azurite: the binary is built
// and run as a process, as the build Pod's containers run it, and the bytes
// are checked with a plain azblob client and net/http.
package blob

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/stretchr/testify/require"

	"berth.dev/berth/test/framework"
)

func TestMain(m *testing.M) { framework.Main(m) }

// env is Azurite, a plain client on it with the three containers, and the
// berth-blob binary.
type env struct {
	azurite *framework.Azurite
	client  *azblob.Client
	bin     string
}

func setup(t *testing.T) *env {
	t.Helper()
	a := framework.AzuriteServer(t)
	c, err := azblob.NewClientFromConnectionString(a.ConnectionString(), nil)
	require.NoError(t, err)
	for _, name := range []string{"uploads", "projects", "artifacts"} {
		if _, err := c.CreateContainer(t.Context(), name, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
			t.Fatalf("create container %s: %v", name, err)
		}
	}
	return &env{azurite: a, client: c, bin: framework.Binary(t, "berth-blob")}
}

// result is a finished berth-blob process.
type result struct {
	code   int
	stdout string
	stderr string
	// maxRSS is the process's peak resident memory, in bytes.
	maxRSS int64
}

// run runs berth-blob with args in dir and the connection string in its
// environment, plus extra environment variables.
func (e *env) run(t *testing.T, dir string, extraEnv []string, args ...string) result {
	t.Helper()
	cmd := e.command(t.Context(), dir, extraEnv, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("run berth-blob %v: %v", args, err)
	}
	r := result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String(), maxRSS: maxRSS(cmd)}
	t.Logf("berth-blob %s: exit %d, max RSS %d MiB", strings.Join(args, " "), r.code, r.maxRSS>>20)
	return r
}

func (e *env) command(ctx context.Context, dir string, extraEnv []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BERTH_BLOB_CONNECTION_STRING="+e.azurite.ConnectionString(),
		"BERTH_BLOB_RETRY_DELAY=200ms", "BERTH_BLOB_RETRIES=3")
	cmd.Env = append(cmd.Env, extraEnv...)
	return cmd
}

func maxRSS(cmd *exec.Cmd) int64 {
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss << 10 // KiB on Linux
	}
	return 0
}

// download reads a whole blob with the plain client.
func (e *env) download(t *testing.T, container, name string) []byte {
	t.Helper()
	resp, err := e.client.DownloadStream(t.Context(), container, name, nil)
	require.NoError(t, err, "download %s/%s", container, name)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return b
}

// writeTree writes files (slash path to content; a trailing "*" in the
// name makes it executable) below dir.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, "*") {
			name, mode = strings.TrimSuffix(name, "*"), 0o755
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(body), mode))
	}
}

// readTree reads every regular file below dir, as writeTree takes them.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, _ := d.Info()
		name := filepath.ToSlash(rel)
		if info.Mode().Perm()&0o100 != 0 {
			name += "*"
		}
		out[name] = string(b)
		return nil
	})
	require.NoError(t, err)
	return out
}
