package blob_test

import (
	"archive/zip"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"berth.dev/berth/pkg/blob"
	"berth.dev/berth/pkg/blob/blobtest"
)

func runOpts(t *testing.T) blob.RunOptions {
	dir := t.TempDir()
	return blob.RunOptions{
		Project: "shop", Containers: blob.DefaultContainers(),
		OutputsDir: filepath.Join(dir, "out"), LogFile: filepath.Join(dir, ".berth", "build.log"),
		Stdout: io.Discard, Stderr: io.Discard, Backoff: fastBackoff,
	}
}

func zipNames(t *testing.T, b []byte) map[string]string {
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	require.NoError(t, err)
	out := map[string]string{}
	for _, f := range zr.File {
		rc, err := f.Open()
		require.NoError(t, err)
		data, err := io.ReadAll(rc)
		require.NoError(t, err)
		out[f.Name] = string(data)
	}
	return out
}

func TestRunDeliversLogAndResults(t *testing.T) {
	f := blobtest.NewFake()
	o := runOpts(t)
	var stdout bytes.Buffer
	o.Stdout = &stdout
	o.ArtifactsDir, o.Version = filepath.Join(filepath.Dir(o.OutputsDir), "dist"), "1.2.0"
	script := `mkdir -p "$OUT/lib" "$DIST" && echo built > "$OUT/lib/app.jar" && echo v > "$DIST/app-1.2.0.jar" && echo to-stdout && echo to-stderr >&2`
	t.Setenv("OUT", o.OutputsDir)
	t.Setenv("DIST", o.ArtifactsDir)
	code, err := blob.Run(t.Context(), f, o, []string{"sh", "-c", script})
	require.NoError(t, err)
	assert.Equal(t, 0, code)
	assert.Equal(t, "to-stdout\n", stdout.String(), "the container log still gets the output")
	log, ctype, ok := f.Get("projects", "shop/logs/build.log")
	require.True(t, ok)
	assert.Contains(t, string(log), "to-stdout\n")
	assert.Contains(t, string(log), "to-stderr\n")
	assert.Equal(t, "text/plain; charset=utf-8", ctype)
	res, ctype, ok := f.Get("projects", "shop/build/result.zip")
	require.True(t, ok)
	assert.Equal(t, "application/zip", ctype)
	assert.Equal(t, map[string]string{"lib/": "", "lib/app.jar": "built\n"}, zipNames(t, res))
	art, _, ok := f.Get("artifacts", "shop/1.2.0/app-1.2.0.jar")
	require.True(t, ok)
	assert.Equal(t, "v\n", string(art))
}

func TestRunFailedCommandUploadsOnlyTheLog(t *testing.T) {
	f := blobtest.NewFake()
	code, err := blob.Run(t.Context(), f, runOpts(t), []string{"sh", "-c", "echo broken; exit 3"})
	require.NoError(t, err)
	assert.Equal(t, 3, code, "the exit code is the command's")
	log, _, ok := f.Get("projects", "shop/logs/build.log")
	require.True(t, ok)
	assert.Equal(t, "broken\n", string(log))
	_, _, ok = f.Get("projects", "shop/build/result.zip")
	assert.False(t, ok, "no result from a failed build")
}

func TestRunFailsWhenAnUploadFails(t *testing.T) {
	f := blobtest.NewFake()
	f.UploadHook = func(_, name string) error {
		if name == "shop/build/result.zip" {
			return errors.New("connection refused")
		}
		return nil
	}
	code, err := blob.Run(t.Context(), f, runOpts(t), []string{"true"})
	require.Error(t, err)
	assert.Equal(t, 0, code, "the command succeeded; the caller turns the error into ExitUploadFailed")
	assert.Contains(t, err.Error(), "giving up after 3 attempts")
	assert.Equal(t, 1+fastBackoff.Attempts, f.Uploads, "the log once, the result with every retry")
}

func TestRunIsSafeToRepeat(t *testing.T) {
	f := blobtest.NewFake()
	o := runOpts(t)
	require.NoError(t, os.MkdirAll(o.OutputsDir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(o.OutputsDir, "a"), []byte("1"), 0o644))
	for range 2 {
		code, err := blob.Run(t.Context(), f, o, []string{"true"})
		require.NoError(t, err)
		require.Equal(t, 0, code)
	}
	res, _, _ := f.Get("projects", "shop/build/result.zip")
	assert.Equal(t, map[string]string{"a": "1"}, zipNames(t, res))
}

func TestRunMissingCommand(t *testing.T) {
	code, err := blob.Run(t.Context(), blobtest.NewFake(), runOpts(t), []string{"/no/such/command"})
	require.Error(t, err)
	assert.Equal(t, 127, code)
}

func TestZipDirStoresIncompressibleFiles(t *testing.T) {
	dir := t.TempDir()
	random := make([]byte, 512<<10)
	_, _ = io.ReadFull(newDeterministic(1), random)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "random.bin"), random, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "text.txt"), bytes.Repeat([]byte("hello world\n"), 10000), 0o644))
	var buf bytes.Buffer
	require.NoError(t, blob.ZipDir(t.Context(), dir, &buf))
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.NoError(t, err)
	methods := map[string]uint16{}
	for _, f := range zr.File {
		methods[f.Name] = f.Method
	}
	assert.Equal(t, map[string]uint16{"random.bin": zip.Store, "text.txt": zip.Deflate}, methods)
}

// TestRunResultWithAndWithoutSpooling: the result archive is the same
// whether it is spooled to a file (small outputs), streamed (outputs above
// the spool limit) or streamed because the spool dir cannot be written; a
// spooled archive leaves no file behind.
func TestRunResultWithAndWithoutSpooling(t *testing.T) {
	tests := []struct {
		name        string
		adjust      func(o *blob.RunOptions)
		fileUploads int
	}{
		{name: "spooled", adjust: func(*blob.RunOptions) {}, fileUploads: 1},
		{name: "above the spool limit", adjust: func(o *blob.RunOptions) { o.SpoolLimit = 4 }},
		{name: "spooling off", adjust: func(o *blob.RunOptions) { o.SpoolLimit = -1 }},
		{name: "spool dir missing", adjust: func(o *blob.RunOptions) { o.SpoolDir = filepath.Join(t.TempDir(), "gone") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := blobtest.NewFake()
			o := runOpts(t)
			tt.adjust(&o)
			t.Setenv("OUT", o.OutputsDir)
			code, err := blob.Run(t.Context(), f, o, []string{"sh", "-c", `mkdir -p "$OUT" && printf 'hello world' > "$OUT/a.txt"`})
			require.NoError(t, err)
			assert.Equal(t, 0, code)
			res, _, ok := f.Get("projects", "shop/build/result.zip")
			require.True(t, ok)
			assert.Equal(t, map[string]string{"a.txt": "hello world"}, zipNames(t, res))
			assert.Equal(t, tt.fileUploads, f.FileUploads, "uploads from a spooled file")
			left, err := filepath.Glob(filepath.Join(filepath.Dir(o.LogFile), ".berth-*.zip"))
			require.NoError(t, err)
			assert.Empty(t, left, "no spooled archive is left")
		})
	}
}
