package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"berth.dev/berth/webhooks"
)

// TestBlobImageRunsItsBinary builds the berth-blob image the webhook
// injects, reads it back as a container runtime would, and runs the binary
// it holds: copy-self, the init container's command.
func TestBlobImageRunsItsBinary(t *testing.T) {
	dir := t.TempDir()
	o := Options{Binary: "berth-blob", Out: filepath.Join(dir, "berth-blob.tar")}
	digest, err := Build(t.Context(), o)
	require.NoError(t, err)
	assert.Equal(t, webhooks.DefaultBlobImage, o.tag(), "the image the webhook injects by default")

	tag, err := name.NewTag(o.tag())
	require.NoError(t, err)
	img, err := tarball.ImageFromPath(o.Out, &tag)
	require.NoError(t, err)
	got, err := img.Digest()
	require.NoError(t, err)
	assert.Equal(t, digest, got)
	cfg, err := img.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, []string{webhooks.BlobImageBinary}, cfg.Config.Entrypoint)
	assert.Equal(t, "1000:1000", cfg.Config.User)
	assert.Equal(t, "linux", cfg.OS)
	assert.Equal(t, "amd64", cfg.Architecture)

	files := extract(t, mutate.Extract(img), dir)
	assert.ElementsMatch(t, []string{"berth-blob", "etc/passwd", "etc/group", "etc/ssl/certs/ca-certificates.crt"}, files)
	certs, err := os.ReadFile(DefaultCACerts)
	require.NoError(t, err)
	inImage, err := os.ReadFile(filepath.Join(dir, "rootfs", "etc/ssl/certs/ca-certificates.crt"))
	require.NoError(t, err)
	assert.Equal(t, certs, inImage)

	// The binary is static: it runs here as it runs in the image.
	bin := filepath.Join(dir, "rootfs", "berth-blob")
	out, err := exec.Command("file", bin).CombinedOutput()
	if err == nil { // file(1) is optional
		assert.Contains(t, string(out), "statically linked")
	}
	copied := filepath.Join(dir, "shared", "berth-blob")
	require.NoError(t, os.MkdirAll(filepath.Dir(copied), 0o755))
	out, err = exec.Command(bin, "copy-self", copied).CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.Command(copied, "help").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "fetch")

	// The same sources give the same image.
	again, err := Build(t.Context(), Options{Binary: "berth-blob", Out: filepath.Join(dir, "again.tar")})
	require.NoError(t, err)
	assert.Equal(t, digest, again, "image digest of a second build")
}

// extract unpacks a flattened image filesystem into dir/rootfs and returns
// its regular files.
func extract(t *testing.T, rc io.ReadCloser, dir string) []string {
	t.Helper()
	defer rc.Close()
	var files []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		require.NoError(t, err)
		if h.Typeflag != tar.TypeReg {
			continue
		}
		files = append(files, h.Name)
		var b bytes.Buffer
		_, err = io.Copy(&b, tr)
		require.NoError(t, err)
		p := filepath.Join(dir, "rootfs", h.Name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, b.Bytes(), os.FileMode(h.Mode)))
	}
}

func TestBadOptionsNameTheFix(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Out: "x.tar"}, "--binary is required"},
		{Options{Binary: "nope", Out: "x.tar"}, `--binary "nope": no folder cmd/nope`},
		{Options{Binary: "berth-blob", Out: "x.tar", Arch: "s390x"}, `--arch "s390x" is not supported`},
		{Options{Binary: "berth-blob", Out: "x.tar", Tag: "Not A Tag"}, `--tag "Not A Tag" is not an image reference`},
		{Options{Binary: "berth-blob", Out: "x.tar", CACerts: "/nonexistent"}, `--ca-certs "/nonexistent"`},
	} {
		_, err := Build(t.Context(), tc.o)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
	}
}
