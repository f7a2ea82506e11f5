package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// plugin is the part of krew's Plugin (v1alpha2) the test reads.
type plugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		Homepage         string `json:"homepage"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Caveats          string `json:"caveats"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Bin    string `json:"bin"`
			Files  []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"files"`
		} `json:"platforms"`
	} `json:"spec"`
}

// TestPackageWritesAManifestKrewCanInstall builds this machine's archive
// (the others are stand-ins), renders .krew.yaml and checks the manifest:
// one platform per archive, each sha256 the archive's, and every file a
// platform names in its archive.
func TestPackageWritesAManifestKrewCanInstall(t *testing.T) {
	out := t.TempDir()
	here := runtime.GOOS + "/" + runtime.GOARCH
	for _, p := range Platforms {
		if p != here {
			goos, goarch, _ := strings.Cut(p, "/")
			require.NoError(t, os.WriteFile(filepath.Join(out, ArchiveName("v9.9.9", goos, goarch)), []byte("stand-in for "+p), 0o644))
		}
	}
	require.NoError(t, Package(t.Context(), Options{Version: "v9.9.9", Out: out, Platforms: []string{here}, Root: "../.."}))

	raw, err := os.ReadFile(filepath.Join(out, "berth.yaml"))
	require.NoError(t, err)
	var m plugin
	require.NoError(t, yaml.UnmarshalStrict(raw, &m), "%s", raw)
	assert.Equal(t, "krew.googlecontainertools.github.com/v1alpha2", m.APIVersion)
	assert.Equal(t, "Plugin", m.Kind)
	assert.Equal(t, "berth", m.Metadata.Name, "installed as kubectl berth")
	assert.Equal(t, "v9.9.9", m.Spec.Version)
	assert.NotEmpty(t, m.Spec.ShortDescription)
	require.Len(t, m.Spec.Platforms, len(Platforms), "one platform per archive")
	for _, p := range m.Spec.Platforms {
		goos, goarch := p.Selector.MatchLabels["os"], p.Selector.MatchLabels["arch"]
		name := ArchiveName("v9.9.9", goos, goarch)
		assert.Equal(t, "https://github.com/berth-dev/berth/releases/download/v9.9.9/"+name, p.URI)
		data, err := os.ReadFile(filepath.Join(out, name))
		require.NoError(t, err)
		sum := sha256.Sum256(data)
		assert.Equal(t, hex.EncodeToString(sum[:]), p.SHA256, "%s/%s", goos, goarch)
		if goos+"/"+goarch != here {
			continue
		}
		entries := archiveEntries(t, filepath.Join(out, name))
		assert.Equal(t, int64(0o755), entries[p.Bin], "the archive holds %s, executable", p.Bin)
		for _, f := range p.Files {
			assert.Contains(t, entries, f.From, "the archive holds %s", f.From)
		}
	}
}

func TestRenderNamesAMissingArchive(t *testing.T) {
	_, err := Render("../../.krew.yaml", "v9.9.9", t.TempDir())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "kubectl-berth_v9.9.9_linux_amd64.tar.gz, which is not in")
}

// archiveEntries returns the mode of each file in a tar.gz.
func archiveEntries(t *testing.T, file string) map[string]int64 {
	t.Helper()
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	gz, err := gzip.NewReader(f)
	require.NoError(t, err)
	tr := tar.NewReader(gz)
	entries := map[string]int64{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return entries
		}
		require.NoError(t, err)
		entries[h.Name] = h.Mode
	}
}
