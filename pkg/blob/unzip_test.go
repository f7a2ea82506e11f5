package blob_test

import (
	"archive/zip"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"berth.dev/berth/pkg/blob"
	"berth.dev/berth/pkg/blob/blobtest"
)

// entry is one member of a test archive.
type entry struct {
	name string
	body string
	mode fs.FileMode
	// size, when > 0, is a body of that many zero bytes.
	size int64
	// store stores rather than deflates.
	store bool
	// lieSize, when > 0, is written as the declared uncompressed size.
	lieSize uint64
}

// archive builds a zip in memory.
func archive(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		if e.store || e.mode&fs.ModeSymlink != 0 {
			h.Method = zip.Store
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		require.NoError(t, err)
		if e.size > 0 {
			_, err = w.Write(make([]byte, e.size))
		} else {
			_, err = w.Write([]byte(e.body))
		}
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	b := buf.Bytes()
	for _, e := range entries {
		if e.lieSize > 0 {
			b = lieAboutSize(t, b, e.name, e.lieSize)
		}
	}
	return b
}

// lieAboutSize rewrites the declared uncompressed size of name in the
// central directory and the local header.
func lieAboutSize(t testing.TB, b []byte, name string, size uint64) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	require.NoError(t, err)
	for _, f := range zr.File {
		if f.Name != name {
			continue
		}
		// Central directory: signature 0x02014b50, uncompressed size at +24.
		cd := bytes.Index(b, append([]byte{0x50, 0x4b, 0x01, 0x02}, b[0:0]...))
		for cd >= 0 {
			nl := int(b[cd+28]) | int(b[cd+29])<<8
			if string(b[cd+46:cd+46+nl]) == name {
				putU32(b[cd+24:], uint32(size))
			}
			next := bytes.Index(b[cd+4:], []byte{0x50, 0x4b, 0x01, 0x02})
			if next < 0 {
				break
			}
			cd += 4 + next
		}
	}
	return b
}

func putU32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

func unzipBytes(t testing.TB, b []byte, dest string, l blob.Limits) (blob.UnzipStats, error) {
	t.Helper()
	return blob.Unzip(t.Context(), bytes.NewReader(b), int64(len(b)), dest, l)
}

func TestUnzipExtractsAProject(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "src")
	b := archive(t,
		entry{name: "pom.xml", body: "<project/>"},
		entry{name: "src/", mode: fs.ModeDir | 0o755},
		entry{name: "src/main/App.java", body: "class App {}"},
		entry{name: "mvnw", body: "#!/bin/sh\n", mode: 0o755},
		entry{name: "link", body: "src/main/App.java", mode: fs.ModeSymlink | 0o777},
		entry{name: "src/main/up", body: "../../pom.xml", mode: fs.ModeSymlink | 0o777},
	)
	st, err := unzipBytes(t, b, dest, blob.Limits{})
	require.NoError(t, err)
	assert.Equal(t, blob.UnzipStats{Files: 3, Dirs: 1, Symlinks: 2, Bytes: int64(len("<project/>") + len("class App {}") + len("#!/bin/sh\n"))}, st)
	got, err := os.ReadFile(filepath.Join(dest, "link"))
	require.NoError(t, err)
	assert.Equal(t, "class App {}", string(got))
	info, err := os.Stat(filepath.Join(dest, "mvnw"))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o755), info.Mode().Perm())
}

// TestUnzipRefusesMaliciousArchives checks every kind of unsafe archive is
// refused with an error naming the entry and what is wrong, and that
// nothing lands outside the destination.
func TestUnzipRefusesMaliciousArchives(t *testing.T) {
	small := blob.Limits{MaxEntries: 10, MaxTotalBytes: 8 << 20, MaxFileBytes: 4 << 20, MaxRatio: 100}
	many := make([]entry, 11)
	for i := range many {
		many[i] = entry{name: strings.Repeat("f", i+1), body: "x"}
	}
	cases := []struct {
		name    string
		entries []entry
		want    string
	}{
		{"zip-slip", []entry{{name: "../evil.sh", body: "x"}}, `entry "../evil.sh": climbs out of the destination`},
		{"zip-slip deep", []entry{{name: "a/b/../../../evil.sh", body: "x"}}, "zip-slip"},
		{"absolute path", []entry{{name: "/etc/evil", body: "x"}}, `entry "/etc/evil": is an absolute path`},
		{"windows drive", []entry{{name: "C:/evil", body: "x"}}, "is an absolute path"},
		{"backslash traversal", []entry{{name: `..\evil`, body: "x"}}, "backslash"},
		{"absolute symlink", []entry{{name: "l", body: "/etc/passwd", mode: fs.ModeSymlink | 0o777}}, `symlink to absolute path "/etc/passwd"`},
		{"escaping symlink", []entry{{name: "d/l", body: "../../x", mode: fs.ModeSymlink | 0o777}}, `entry "d/l": symlink to "../../x" escapes`},
		{"chained symlinks", []entry{
			{name: "d/", mode: fs.ModeDir | 0o755},
			{name: "y", body: ".", mode: fs.ModeSymlink | 0o777},
			{name: "d/x", body: "../y/..", mode: fs.ModeSymlink | 0o777},
		}, "outside the destination"},
		{"write through symlink", []entry{
			{name: "l", body: ".", mode: fs.ModeSymlink | 0o777},
			{name: "l", body: "again"},
		}, "appears twice"},
		{"symlink through symlink", []entry{
			{name: "a/", mode: fs.ModeDir | 0o755},
			{name: "a/b", body: "..", mode: fs.ModeSymlink | 0o777},
			{name: "a/b/c", body: "../x", mode: fs.ModeSymlink | 0o777},
		}, `entry "a/b/c": its path goes through "a/b", a symlink in the archive`},
		{"file through symlink", []entry{
			{name: "d/", mode: fs.ModeDir | 0o755},
			{name: "d/up", body: "..", mode: fs.ModeSymlink | 0o777},
			{name: "d/up/evil.sh", body: "x"},
		}, `entry "d/up/evil.sh": its path goes through "d/up", a symlink in the archive`},
		{"dangling symlink through symlink", []entry{
			{name: "a/", mode: fs.ModeDir | 0o755},
			{name: "a/up", body: "..", mode: fs.ModeSymlink | 0o777},
			{name: "l", body: "a/up/../x", mode: fs.ModeSymlink | 0o777},
		}, `entry "l": symlink to "a/up/../x" resolves, through the archive's symlinks, outside the destination`},
		{"dangling symlink through a chain", []entry{
			{name: "a/", mode: fs.ModeDir | 0o755},
			{name: "a/up", body: "..", mode: fs.ModeSymlink | 0o777},
			{name: "p", body: "a/up", mode: fs.ModeSymlink | 0o777},
			{name: "l", body: "p/../x", mode: fs.ModeSymlink | 0o777},
		}, `entry "l": symlink to "p/../x" resolves, through the archive's symlinks, outside the destination`},
		{"symlink loop", []entry{
			{name: "x", body: "y/z", mode: fs.ModeSymlink | 0o777},
			{name: "y", body: "x", mode: fs.ModeSymlink | 0o777},
		}, `entry "x": symlink to "y/z" goes through more than 40 nested symlinks, or loops`},
		{"too many entries", many, "11 entries, above the limit of 10 entries"},
		{"file too big", []entry{{name: "big", size: 5 << 20, store: true}}, `entry "big": uncompressed size 5242880 bytes is above the per-file limit of 4194304 bytes`},
		{"total too big", []entry{{name: "a", size: 3 << 20, store: true}, {name: "b", size: 3 << 20, store: true}, {name: "c", size: 3 << 20, store: true}}, `entry "c": brings the archive's uncompressed size to 9437184 bytes, above the total limit of 8388608 bytes`},
		{"ratio bomb", []entry{{name: "zeros", size: 3 << 20}}, `entry "zeros": compression ratio`},
		{"lying size", []entry{{name: "liar", size: 3 << 20, store: true, lieSize: 10}}, `entry "liar": inflates past its declared size of 10 bytes`},
		{"device", []entry{{name: "dev", mode: fs.ModeDevice | 0o644}}, "not a file, directory or symlink"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			dest := filepath.Join(root, "a", "src")
			_, err := unzipBytes(t, archive(t, tc.entries...), dest, small)
			require.Error(t, err)
			var ue *blob.UnsafeArchiveError
			require.True(t, errors.As(err, &ue), "error %v is an UnsafeArchiveError", err)
			assert.Contains(t, err.Error(), tc.want)
			assert.True(t, blob.IsPermanent(err), "no retry fixes an unsafe archive")
			// Nothing outside dest.
			entries, _ := os.ReadDir(filepath.Join(root, "a"))
			for _, e := range entries {
				assert.Equal(t, "src", e.Name(), "only dest exists next to dest")
			}
			_, statErr := os.Lstat(filepath.Join(root, "evil.sh"))
			assert.True(t, errors.Is(statErr, fs.ErrNotExist))
		})
	}
}

// TestUnzipKeepsSafeSymlinkChains checks links to links, and links through
// links, unpack when they stay inside the destination.
func TestUnzipKeepsSafeSymlinkChains(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "src")
	b := archive(t,
		entry{name: "v1/", mode: fs.ModeDir | 0o755},
		entry{name: "v1/a.txt", body: "one"},
		entry{name: "current", body: "v1", mode: fs.ModeSymlink | 0o777},
		entry{name: "latest", body: "./current", mode: fs.ModeSymlink | 0o777},
		entry{name: "docs/a", body: "../latest/a.txt", mode: fs.ModeSymlink | 0o777},
		entry{name: "docs/top", body: "../current/..", mode: fs.ModeSymlink | 0o777},
	)
	st, err := unzipBytes(t, b, dest, blob.Limits{})
	require.NoError(t, err)
	assert.Equal(t, blob.UnzipStats{Files: 1, Dirs: 1, Symlinks: 4, Bytes: 3}, st)
	got, err := os.ReadFile(filepath.Join(dest, "docs", "top", "docs", "a"))
	require.NoError(t, err)
	assert.Equal(t, "one", string(got))
}

// TestUnzipRefusesOverlappingEntries checks entries that share compressed
// data are refused before anything is written, whatever their sizes.
func TestUnzipRefusesOverlappingEntries(t *testing.T) {
	cases := []struct {
		name string
		zip  []byte
		want string
	}{
		{
			// 2,048 entries of 1 MiB each, just small enough for the
			// per-entry ratio check: 2 GiB from about 100 KiB.
			name: "entries share one stream",
			zip:  blobtest.SharedStreamBomb(2048, blob.RatioMinBytes),
			want: `entry "1": overlaps entry "0" in the archive (its data is at offset 31)`,
		},
		{
			name: "entry inside another",
			zip:  blobtest.NestedEntry(),
			want: `entry "b": overlaps entry "a" in the archive (its data is at offset 62)`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "src")
			_, err := unzipBytes(t, tc.zip, dest, blob.Limits{})
			var ue *blob.UnsafeArchiveError
			require.True(t, errors.As(err, &ue), "error %v is an UnsafeArchiveError", err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "entries that share bytes are a zip bomb")
			_, statErr := os.Stat(dest)
			assert.True(t, errors.Is(statErr, fs.ErrNotExist), "nothing is written")
		})
	}
	assert.Less(t, len(cases[0].zip), 128<<10, "the bomb is small")
}

// TestUnzipTotalRatio checks the ratio of the whole archive is capped once
// it unpacks to more than TotalRatioMinBytes, for bombs made of many
// entries each too small for the per-entry ratio.
func TestUnzipTotalRatio(t *testing.T) {
	cases := []struct {
		name    string
		entries int
		limits  blob.Limits
		want    string
	}{
		{name: "24 MiB of zeros", entries: 24, want: "a ratio of 9"},
		{name: "under the floor", entries: 15},
		{name: "limit raised", entries: 24, limits: blob.Limits{MaxTotalRatio: 2000}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "src")
			st, err := unzipBytes(t, blobtest.ZeroEntries(tc.entries, blob.RatioMinBytes), dest, tc.limits)
			if tc.want == "" {
				require.NoError(t, err)
				assert.Equal(t, int64(tc.entries)*blob.RatioMinBytes, st.Bytes)
				return
			}
			var ue *blob.UnsafeArchiveError
			require.True(t, errors.As(err, &ue), "error %v is an UnsafeArchiveError", err)
			assert.Contains(t, err.Error(), "unsafe archive refused: ")
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "above the limit of 200:1 for the whole archive")
			_, statErr := os.Stat(dest)
			assert.True(t, errors.Is(statErr, fs.ErrNotExist), "nothing is written")
		})
	}
}
