package kubectlberth

import (
	"archive/zip"
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"berth.dev/berth/pkg/blob"
)

// tree writes files (slash path to content) below a new folder.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	}
	return dir
}

// zipped lists the entries SourceFilter keeps of dir, as they are zipped.
func zipped(t *testing.T, dir string) ([]string, error) {
	t.Helper()
	keep, err := SourceFilter(dir)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := blob.ZipTree(t.Context(), dir, &buf, keep); err != nil {
		return nil, err
	}
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.NoError(t, err)
	var names []string
	for _, f := range zr.File {
		if !strings.HasSuffix(f.Name, "/") {
			names = append(names, f.Name)
		}
	}
	sort.Strings(names)
	return names, nil
}

func TestSourceFilterReadsIgnoreFilesAsGitDoes(t *testing.T) {
	dir := tree(t, map[string]string{
		".gitignore":         "# build output\n*.log\nbin/\n!keep.log\n/top.txt\n",
		".berthignore":       "secrets/\n",
		"main.go":            "package main",
		"debug.log":          "x",
		"keep.log":           "kept: a later ! pattern wins",
		"top.txt":            "anchored to the root",
		"bin/app":            "binary",
		"secrets/token":      "never leaves the laptop",
		".git/HEAD":          "ref: refs/heads/main",
		"web/top.txt":        "not the root's top.txt",
		"web/.gitignore":     "node_modules/\n",
		"web/node_modules/x": "deps",
		"web/index.js":       "js",
		"web/app.log":        "a parent's pattern applies below",
		"lib/.berthignore":   "!*.log\n",
		"lib/trace.log":      "re-included below lib by .berthignore",
	})
	names, err := zipped(t, dir)
	require.NoError(t, err)
	assert.Equal(t, []string{
		".berthignore", ".gitignore", "keep.log", "lib/.berthignore", "lib/trace.log", "main.go",
		"web/.gitignore", "web/index.js", "web/top.txt",
	}, names)
}

func TestSourceFilterNeverFollowsASymlinkOut(t *testing.T) {
	outside := tree(t, map[string]string{"secret": "the laptop's"})
	for _, tt := range []struct {
		name, link, target, want string
	}{
		{name: "absolute", link: "abs", target: filepath.Join(outside, "secret"), want: "an absolute path"},
		{name: "up and out", link: "up", target: "../elsewhere/secret", want: "outside"},
		{name: "deep and out", link: "a/b/up", target: "../../../x", want: "outside"},
		{name: "through another link", link: "via", target: "hop/secret", want: "which resolves to"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := tree(t, map[string]string{"main.go": "package main", "a/b/c.txt": "c"})
			if tt.name == "through another link" {
				require.NoError(t, os.Symlink(outside, filepath.Join(dir, "hop.tmp")))
				require.NoError(t, os.Rename(filepath.Join(dir, "hop.tmp"), filepath.Join(dir, "hop")))
				// hop itself is refused first unless it is ignored.
				require.NoError(t, os.WriteFile(filepath.Join(dir, ".berthignore"), []byte("/hop\n"), 0o644))
			}
			p := filepath.Join(dir, filepath.FromSlash(tt.link))
			require.NoError(t, os.Symlink(tt.target, p))
			_, err := zipped(t, dir)
			require.Error(t, err)
			assert.ErrorContains(t, err, tt.want)
			assert.ErrorContains(t, err, "name "+tt.link+" in .berthignore")
		})
	}
	t.Run("inside is kept as a link", func(t *testing.T) {
		dir := tree(t, map[string]string{"a/b/c.txt": "c"})
		require.NoError(t, os.Symlink("b/c.txt", filepath.Join(dir, "a/link")))
		require.NoError(t, os.Symlink("a", filepath.Join(dir, "dirlink")))
		names, err := zipped(t, dir)
		require.NoError(t, err)
		assert.Equal(t, []string{"a/b/c.txt", "a/link", "dirlink"}, names)
	})
	t.Run("ignored is not looked at", func(t *testing.T) {
		dir := tree(t, map[string]string{"main.go": "package main", ".gitignore": "venv\n"})
		require.NoError(t, os.Symlink(outside, filepath.Join(dir, "venv")))
		names, err := zipped(t, dir)
		require.NoError(t, err)
		assert.Equal(t, []string{".gitignore", "main.go"}, names)
	})
}
