package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLoadArgs(t *testing.T) {
	write := func(t *testing.T, body string) string {
		p := filepath.Join(t.TempDir(), "args.yaml")
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
		return p
	}
	t.Run("no file gives the defaults", func(t *testing.T) {
		a, err := LoadArgs("")
		require.NoError(t, err)
		assert.Equal(t, DefaultPreset, a.Preset)
		assert.EqualValues(t, DefaultWorkspaceTargetPercent, a.WorkspaceTargetPercent)
	})
	t.Run("fields are read and the rest defaulted", func(t *testing.T) {
		a, err := LoadArgs(write(t, "preset: eks\nworkspaceTargetPercent: 70\n"))
		require.NoError(t, err)
		assert.Equal(t, "eks", a.Preset)
		assert.EqualValues(t, 70, a.WorkspaceTargetPercent)
		assert.EqualValues(t, DefaultEmptyNodeScore, a.EmptyNodeScore)
	})
	t.Run("a misspelt field is an error", func(t *testing.T) {
		_, err := LoadArgs(write(t, "workspaceTargetPercnt: 70\n"))
		assert.ErrorContains(t, err, "workspaceTargetPercnt")
	})
	t.Run("invalid values name the field", func(t *testing.T) {
		_, err := LoadArgs(write(t, "workspaceTargetPercent: 120\n"))
		assert.ErrorContains(t, err, "workspaceTargetPercent")
	})
	t.Run("a missing file is an error", func(t *testing.T) {
		_, err := LoadArgs(filepath.Join(t.TempDir(), "none.yaml"))
		assert.Error(t, err)
	})
}
