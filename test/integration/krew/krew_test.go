// Package krew installs kubectl berth with the real krew from the manifest
// and archive `make krew` writes, and runs it through kubectl's plugin
// lookup against the local cluster.
package krew

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

func TestMain(m *testing.M) { framework.Main(m) }

// TestKrewInstallsKubectlBerth packages this machine's archive with
// hack/krew (the other platforms' archives are stand-ins: krew checks only
// the one it installs), installs it with `krew install --manifest
// --archive` into a fresh KREW_ROOT, and runs `kubectl berth orgs` with
// krew's bin folder on the PATH, as a developer would after installing.
func TestKrewInstallsKubectlBerth(t *testing.T) {
	env := framework.Cluster(t)
	root, err := localcluster.RepoRoot(".")
	require.NoError(t, err)
	out := t.TempDir()
	const version = "v0.0.0-test"
	here := runtime.GOOS + "/" + runtime.GOARCH
	for _, p := range []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64", "windows/amd64"} {
		if p != here {
			name := "kubectl-berth_" + version + "_" + strings.ReplaceAll(p, "/", "_") + ".tar.gz"
			require.NoError(t, os.WriteFile(filepath.Join(out, name), []byte("stand-in"), 0o644))
		}
	}
	run(t, root, nil, "go", "run", "./hack/krew", "--version", version, "--out", out, "--platforms", here)

	krewRoot := t.TempDir()
	krewEnv := []string{"KREW_ROOT=" + krewRoot, "HOME=" + t.TempDir()}
	archive := filepath.Join(out, "kubectl-berth_"+version+"_"+strings.ReplaceAll(here, "/", "_")+".tar.gz")
	got := run(t, root, krewEnv, env.Tools.Krew, "install", "--manifest="+filepath.Join(out, "berth.yaml"), "--archive="+archive)
	assert.Contains(t, got, "Installed plugin: berth")
	assert.FileExists(t, filepath.Join(krewRoot, "receipts", "berth.yaml"), "krew keeps its receipt, for upgrade and uninstall")

	env.Create(t, testutil.Org("krew").MaxWorkspaces(3).Obj())
	pluginPath := []string{"PATH=" + filepath.Join(krewRoot, "bin") + string(os.PathListSeparator) + os.Getenv("PATH")}
	got = run(t, root, pluginPath, env.Tools.Kubectl, "berth", "orgs", "--all", "--kubeconfig", env.Kubeconfig())
	assert.Contains(t, got, "krew", "kubectl found kubectl-berth in krew's bin folder and it read the cluster")
	assert.Contains(t, got, "0/3")
}

// run runs name with args in dir, with env added to this process's, and
// returns what it printed.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s: %s", name, strings.Join(args, " "), out)
	return string(out)
}
