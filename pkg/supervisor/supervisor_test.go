package supervisor

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKeeperReapsWhatTheCommandLeaves(t *testing.T) {
	keeper, out, err := Run(t.Context(), os.Environ(), "bash", "-c", "sleep 60 & echo $!")
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	require.NoError(t, err, "output %q", out)

	require.NoError(t, syscall.Kill(pid, 0), "the background sleep runs on after bash exits")
	assert.False(t, keeper.Wait(200*time.Millisecond), "the keeper stays while it keeps a process")

	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	require.True(t, keeper.Wait(5*time.Second), "the keeper exits after its last process")
	_, err = os.Stat("/proc/" + strconv.Itoa(pid))
	assert.True(t, os.IsNotExist(err), "the killed process was reaped, not left a zombie")
}

func TestRunReportsFailure(t *testing.T) {
	keeper, out, err := Run(t.Context(), os.Environ(), "bash", "-c", "echo no such thing; exit 3")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "exit status 3")
	assert.Equal(t, "no such thing\n", string(out))
	assert.True(t, keeper.Wait(5*time.Second))
}
