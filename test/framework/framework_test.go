package framework

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { Main(m) }

func TestPostgresServesQueries(t *testing.T) {
	pg := PostgresServer(t)
	conn, err := pgx.Connect(t.Context(), pg.DSN)
	require.NoError(t, err)
	defer conn.Close(context.Background())

	_, err = conn.Exec(t.Context(), `CREATE TABLE probe (id int PRIMARY KEY, note text)`)
	require.NoError(t, err)
	_, err = conn.Exec(t.Context(), `INSERT INTO probe VALUES (1, 'hello')`)
	require.NoError(t, err)
	var note string
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT note FROM probe WHERE id = 1`).Scan(&note))
	assert.Equal(t, "hello", note)
	assert.Contains(t, pg.DSN, "127.0.0.1")
}

func TestAzuriteStoresBlobsAcrossRestart(t *testing.T) {
	az := AzuriteServer(t)
	cl, err := azblob.NewClientFromConnectionString(az.ConnectionString(), nil)
	require.NoError(t, err)
	_, err = cl.CreateContainer(t.Context(), "probe", nil)
	require.NoError(t, err)
	_, err = cl.UploadBuffer(t.Context(), "probe", "a/b.txt", []byte("hello blob"), nil)
	require.NoError(t, err)

	az.Stop()
	noRetry, err := azblob.NewClientFromConnectionString(az.ConnectionString(),
		&azblob.ClientOptions{ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}}})
	require.NoError(t, err)
	_, err = noRetry.DownloadStream(t.Context(), "probe", "a/b.txt", nil)
	require.Error(t, err, "a stopped Azurite must not answer")
	require.NoError(t, az.Start(t.Context()))

	resp, err := cl.DownloadStream(t.Context(), "probe", "a/b.txt", nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "hello blob", string(body))
}

// TestKilledTestLeavesNoProcess runs a child test process that starts a
// cluster, PostgreSQL and Azurite, kills it with SIGKILL, the way a CI timeout
// or a second Ctrl-C would, and checks that the watchdog stops every process
// the child started.
func TestKilledTestLeavesNoProcess(t *testing.T) {
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestChildStartsEverything$", "-test.v")
	cmd.Env = append(os.Environ(), "BERTH_FRAMEWORK_CHILD=1")
	var out bytes.Buffer
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = &out
	require.NoError(t, cmd.Start())

	// The child prints the pids it started, then blocks.
	var pids []int
	buf := make([]byte, 0, 4096)
	deadline := time.Now().Add(3 * time.Minute)
	for len(pids) == 0 && time.Now().Before(deadline) {
		chunk := make([]byte, 1024)
		n, err := stdout.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if i := bytes.Index(buf, []byte("PIDS ")); i >= 0 {
			if j := bytes.IndexByte(buf[i:], '\n'); j > 0 {
				for _, f := range strings.Fields(string(buf[i+5 : i+j])) {
					pid, _ := strconv.Atoi(f)
					pids = append(pids, pid)
				}
			}
		}
		if err != nil {
			break
		}
	}
	require.NotEmpty(t, pids, "child printed no pids: %s\n%s", buf, out.String())
	for _, pid := range pids {
		require.True(t, alive(pid), "pid %d should be running before the kill", pid)
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()

	Eventually(t, 30*time.Second, fmt.Sprintf("pids %v to exit", pids), func(context.Context) (bool, error) {
		for _, pid := range pids {
			if alive(pid) {
				return false, nil
			}
		}
		return true, nil
	})
}

// TestChildStartsEverything is TestKilledTestLeavesNoProcess's child.
func TestChildStartsEverything(t *testing.T) {
	if os.Getenv("BERTH_FRAMEWORK_CHILD") != "1" {
		return // only meaningful as the child of TestKilledTestLeavesNoProcess
	}
	env := Cluster(t)
	pg := PostgresServer(t)
	az := AzuriteServer(t)
	pids := env.Cluster.PIDs()
	pgPID, err := os.ReadFile(pg.data() + "/postmaster.pid")
	require.NoError(t, err)
	pid, _ := strconv.Atoi(strings.SplitN(string(pgPID), "\n", 2)[0])
	pids = append(pids, pid, az.cmd.Process.Pid)
	fmt.Printf("PIDS %s\n", strings.Trim(fmt.Sprint(pids), "[]"))
	select {} // wait to be killed
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i > 0 && len(s) > i+2 {
		return s[i+2] != 'Z'
	}
	return true
}

// A process that could not bind a port found free is started again, on
// other ports; any other failure is not retried.
func TestOnFreePortsRetriesOnlyABusyPort(t *testing.T) {
	dir := t.TempDir()
	attempts := 0
	p := onFreePorts(t, "server", func() (*Process, error) {
		attempts++
		p := &Process{Name: "server", Log: fmt.Sprintf("%s/log-%d", dir, attempts)}
		if attempts == 1 {
			require.NoError(t, os.WriteFile(p.Log, []byte("listen tcp 127.0.0.1:40123: bind: address already in use\n"), 0o644))
			return p, fmt.Errorf("exited")
		}
		return p, nil
	})
	assert.Equal(t, 2, attempts)
	assert.Equal(t, dir+"/log-2", p.Log)

	// A failure of another kind fails the test at once: run it in a
	// goroutine's test-like recorder.
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		onFreePorts(rec, "server", func() (*Process, error) {
			p := &Process{Name: "server", Log: dir + "/other"}
			require.NoError(t, os.WriteFile(p.Log, []byte("flag provided but not defined\n"), 0o644))
			return p, fmt.Errorf("exited")
		})
	}()
	<-done
	assert.Contains(t, rec.fatal, "flag provided but not defined")
}

// fatalRecorder records a Fatalf and ends the goroutine, as testing.T
// does, without failing the test it wraps.
type fatalRecorder struct {
	testing.TB
	fatal string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Logf(string, ...any) {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestMedian(t *testing.T) {
	assert.Equal(t, 0.0, Median(nil))
	assert.Equal(t, 2.0, Median([]float64{3, 1, 2}))
	assert.Equal(t, 2.5, Median([]float64{4, 1, 3, 2}), "an even count takes the mean of the two middle values")
	v := []float64{3, 1, 2}
	Median(v)
	assert.Equal(t, []float64{3, 1, 2}, v, "the input is not reordered")
}
