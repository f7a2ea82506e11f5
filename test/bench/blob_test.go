package bench

import (
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"berth.dev/berth/pkg/blob"
	"berth.dev/berth/test/framework"
)

const (
	blobPayload = 256 << 20
	blobRounds  = 5
)

// BenchmarkBlobTransfer moves a 256 MiB build output through Azurite in
// alternating rounds, two ways: the berth-blob binary (run: zip and upload
// result.zip plus the log; fetch: download, verify, safe unzip) and a plain
// azblob client doing the same transfer (UploadFile of the file, which is
// one Put Blob up to 256 MiB; UploadStream with berth-blob's block size and
// concurrency; DownloadFile of the archive, then an unchecked unzip). It
// reports the median MB/s of each and the ratios berth-blob/plain (target
// >= 0.9).
func BenchmarkBlobTransfer(b *testing.B) {
	a := framework.AzuriteServer(b)
	bin := framework.Binary(b, "berth-blob")
	c, err := azblob.NewClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"uploads", "projects", "bench"} {
		if _, err := c.CreateContainer(b.Context(), name, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
			b.Fatal(err)
		}
	}
	work := b.TempDir()
	out := filepath.Join(work, "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		b.Fatal(err)
	}
	payload := filepath.Join(out, "app.bin")
	writeRandom(b, payload, blobPayload)
	berthBlob := func(args ...string) {
		cmd := exec.CommandContext(b.Context(), bin, args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "BERTH_BLOB_CONNECTION_STRING="+a.ConnectionString())
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("berth-blob %v: %v\n%s", args, err, o)
		}
	}
	timed := func(f func()) float64 {
		start := time.Now()
		f()
		return blobPayload / time.Since(start).Seconds() / 1e6
	}
	var up, down [2][]float64 // [berth, plain]
	var upBlocks []float64    // plain UploadStream with berth-blob's block shape
	for range b.N * blobRounds {
		up[0] = append(up[0], timed(func() {
			berthBlob("run", "--project=bench", "--outputs="+out, "--log-file="+filepath.Join(work, "build.log"), "--", "true")
		}))
		up[1] = append(up[1], timed(func() {
			if _, err := c.UploadFile(b.Context(), "bench", "plain/app.bin", openFile(b, payload), nil); err != nil {
				b.Fatal(err)
			}
		}))
		upBlocks = append(upBlocks, timed(func() {
			_, err := c.UploadStream(b.Context(), "bench", "plain/app.bin", openFile(b, payload),
				&blockblob.UploadStreamOptions{BlockSize: blob.DefaultBlockSize, Concurrency: blob.DefaultConcurrency})
			if err != nil {
				b.Fatal(err)
			}
		}))
		// Fetch what run delivered, as a build's source.
		copyBlob(b, c, "projects", blob.ResultName("bench"), "uploads", blob.SourceName("bench"))
		down[0] = append(down[0], timed(func() {
			dest := filepath.Join(work, "fetched")
			_ = os.RemoveAll(dest)
			berthBlob("fetch", "--project=bench", "--dest="+dest)
		}))
		down[1] = append(down[1], timed(func() {
			dest := filepath.Join(work, "plain")
			_ = os.RemoveAll(dest)
			plainFetch(b, c, "uploads", blob.SourceName("bench"), filepath.Join(work, "plain.zip"), dest)
		}))
	}
	report := func(what string, m [2][]float64) {
		berth, plain := median(m[0]), median(m[1])
		b.ReportMetric(berth, what+"-MB/s-berth-blob")
		b.ReportMetric(plain, what+"-MB/s-plain")
		b.ReportMetric(berth/plain, what+"-ratio")
		b.Logf("%-6s %d MiB x %d: berth-blob %6.1f MB/s  plain azblob %6.1f MB/s  ratio %.2f (target >= 0.9)",
			what, blobPayload>>20, len(m[0]), berth, plain, berth/plain)
	}
	report("upload", up)
	report("upload-blocks", [2][]float64{up[0], upBlocks})
	report("fetch", down)
}

func writeRandom(b *testing.B, p string, n int64) {
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.NewChaCha8([32]byte{1}), n); err != nil {
		b.Fatal(err)
	}
}

func openFile(b *testing.B, p string) *os.File {
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

func copyBlob(b *testing.B, c *azblob.Client, fromC, from, toC, to string) {
	resp, err := c.DownloadStream(b.Context(), fromC, from, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := c.UploadStream(b.Context(), toC, to, resp.Body, nil); err != nil {
		b.Fatal(err)
	}
}

// plainFetch is the same fetch with the SDK's own DownloadFile and a
// straightforward unzip, with none of berth-blob's checks.
func plainFetch(b *testing.B, c *azblob.Client, container, name, zipPath, dest string) {
	f, err := os.Create(zipPath)
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(zipPath)
	defer f.Close()
	n, err := c.DownloadFile(b.Context(), container, name, f, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := unzipPlain(f, n, dest); err != nil {
		b.Fatal(err)
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
