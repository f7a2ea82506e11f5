package blob_test

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc64"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"berth.dev/berth/pkg/blob"
	"berth.dev/berth/pkg/blob/blobtest"
)

var fastBackoff = blob.Backoff{Attempts: 3, Initial: time.Millisecond, Max: time.Millisecond}

func fetchOpts(dest string) blob.FetchOptions {
	return blob.FetchOptions{Container: "uploads", Name: blob.SourceName("shop"), Dest: dest, Backoff: fastBackoff}
}

func TestFetchUnzipsTheSource(t *testing.T) {
	f := blobtest.NewFake()
	f.Put("uploads", "shop/source.zip", archive(t, entry{name: "a/b.txt", body: "hello"}), true)
	dest := filepath.Join(t.TempDir(), "src")
	st, err := blob.Fetch(t.Context(), f, fetchOpts(dest))
	require.NoError(t, err)
	assert.Equal(t, 1, st.Unzip.Files)
	got, err := os.ReadFile(filepath.Join(dest, "a/b.txt"))
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got))
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(dest), ".berth-fetch-*"))
	assert.Empty(t, left, "the downloaded archive is removed")
}

func TestFetchResumesABrokenStream(t *testing.T) {
	f := blobtest.NewFake()
	data := archive(t, entry{name: "big.bin", size: 200 << 10, store: true})
	f.Put("uploads", "shop/source.zip", data, true)
	f.BreakAfter = 64 << 10
	var offsets []int64
	f.DownloadHook = func(_, _ string, offset int64) error { offsets = append(offsets, offset); return nil }
	o := fetchOpts(filepath.Join(t.TempDir(), "src"))
	o.Backoff.Attempts = 10
	_, err := blob.Fetch(t.Context(), f, o)
	require.NoError(t, err)
	assert.Equal(t, []int64{0, 64 << 10, 128 << 10, 192 << 10}, offsets, "each try resumes where the last stopped")
}

func TestFetchRetriesTransientErrors(t *testing.T) {
	f := blobtest.NewFake()
	f.Put("uploads", "shop/source.zip", archive(t, entry{name: "x", body: "x"}), false)
	fails := 2
	f.DownloadHook = func(string, string, int64) error {
		if fails > 0 {
			fails--
			return errors.New("connection refused")
		}
		return nil
	}
	_, err := blob.Fetch(t.Context(), f, fetchOpts(filepath.Join(t.TempDir(), "src")))
	require.NoError(t, err)
	assert.Equal(t, 3, f.Downloads)
}

func TestFetchChecksIntegrity(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(f *blobtest.Fake)
		want    string
	}{
		{"CRC-32C wins over MD5", func(f *blobtest.Fake) { f.SetCRC32C("uploads", "shop/source.zip", "00000000") }, "CRC-32C"},
		{"CRC-64 of an older upload", func(f *blobtest.Fake) {
			f.SetCRC32C("uploads", "shop/source.zip", "")
			f.SetCRC64("uploads", "shop/source.zip", "0000000000000000")
		}, "CRC-64"},
		{"MD5 without berth's sums", func(f *blobtest.Fake) {
			f.SetCRC32C("uploads", "shop/source.zip", "")
			f.SetMD5("uploads", "shop/source.zip", make([]byte, 16))
		}, "Content-MD5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := blobtest.NewFake()
			f.Put("uploads", "shop/source.zip", archive(t, entry{name: "x", body: "x"}), true)
			tc.corrupt(f)
			_, err := blob.Fetch(t.Context(), f, fetchOpts(filepath.Join(t.TempDir(), "src")))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, fastBackoff.Attempts, f.Downloads, "a corrupt copy is fetched again from the start")
		})
	}
}

func TestFetchMissingSourceFailsAtOnce(t *testing.T) {
	f := blobtest.NewFake()
	_, err := blob.Fetch(t.Context(), f, fetchOpts(filepath.Join(t.TempDir(), "src")))
	require.ErrorIs(t, err, blob.ErrNotFound)
	assert.Contains(t, err.Error(), "uploads/shop/source.zip does not exist")
	assert.Equal(t, 1, f.Downloads)
}

func TestFetchRefusesAnUnsafeArchiveWithoutRetry(t *testing.T) {
	f := blobtest.NewFake()
	f.Put("uploads", "shop/source.zip", archive(t, entry{name: "../x", body: "x"}), true)
	_, err := blob.Fetch(t.Context(), f, fetchOpts(filepath.Join(t.TempDir(), "src")))
	var ue *blob.UnsafeArchiveError
	require.True(t, errors.As(err, &ue), fmt.Sprint(err))
	assert.Equal(t, 1, f.Downloads)
}

func TestValidateProject(t *testing.T) {
	for _, p := range []string{"shop", "shop-api", "a", "v1.2_x"} {
		assert.NoError(t, blob.ValidateProject(p), p)
	}
	for _, p := range []string{"", ".", "..", "a/b", "-a", "a-", "../x", string(make([]byte, 64))} {
		assert.Error(t, blob.ValidateProject(p), p)
	}
}

func TestReadURLChecksItsInput(t *testing.T) {
	f := blobtest.NewFake()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	u, err := blob.ReadURL(t.Context(), f, "projects", "shop", "build/result.zip", 0, now)
	require.NoError(t, err)
	assert.Equal(t, "https://fake.blob/projects/shop/build/result.zip?se=2026-01-01T01:00:00Z&sp=r", u)
	_, err = blob.ReadURL(t.Context(), f, "projects", "shop", "../other/build/result.zip", time.Hour, now)
	assert.Error(t, err)
	_, err = blob.ReadURL(t.Context(), f, "projects", "..", "x", time.Hour, now)
	assert.Error(t, err)
	_, err = blob.ReadURL(t.Context(), f, "projects", "shop", "x", 8*24*time.Hour, now)
	assert.Error(t, err)
}

// A blob berth uploaded before it recorded CRC-32C carries only its CRC-64,
// which fetch still checks and passes.
func TestFetchChecksAnOlderCRC64(t *testing.T) {
	f := blobtest.NewFake()
	data := archive(t, entry{name: "x", body: "x"})
	f.Put("uploads", "shop/source.zip", data, true)
	f.SetCRC32C("uploads", "shop/source.zip", "")
	h := crc64.New(crc64.MakeTable(crc64.ECMA))
	h.Write(data)
	f.SetCRC64("uploads", "shop/source.zip", hex.EncodeToString(h.Sum(nil)))
	_, err := blob.Fetch(t.Context(), f, fetchOpts(filepath.Join(t.TempDir(), "src")))
	require.NoError(t, err)
	assert.Equal(t, 1, f.Downloads)
}
