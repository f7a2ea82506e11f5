package blob

import (
	"archive/zip"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"berth.dev/berth/pkg/blob"
	"berth.dev/berth/test/framework"
)

const (
	blobPayload = 200 << 20
	blobRounds  = 7
)

// BenchmarkBlobTransfer moves a 200 MiB build output through Azurite in
// alternating rounds, berth-blob against a plain azblob client. berth-blob
// runs as in a build Pod: it holds no credential and asks berth-manager
// for a SAS URL of each blob with a token bound to a (Pending) build Pod;
// the plain client uses the connection string.
//
//   - upload: berth-blob run (zip the outputs, upload result.zip and the
//     log) against the same transfer done plainly: archive/zip of the
//     outputs (stored, the fastest) into a file, then UploadFile, which is
//     one Put Blob up to 256 MiB;
//   - upload-raw: against UploadFile of the output file itself, no archive;
//   - upload-blocks: against UploadStream of the output file with
//     berth-blob's block size and concurrency;
//   - fetch: berth-blob fetch (download, verify, safe unzip) against
//     DownloadFile of the archive and an unchecked unzip.
//
// It reports the median MB/s of each and the ratios berth-blob/plain
// (target >= 0.9 on upload and fetch).
func BenchmarkBlobTransfer(b *testing.B) {
	a := framework.AzuriteServer(b)
	bin := framework.Binary(b, "berth-blob")
	c := azuriteClient(b, a)
	work := scratchDir(b)
	out := filepath.Join(work, "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		b.Fatal(err)
	}
	payload := filepath.Join(out, "app.bin")
	writeRandom(b, payload, blobPayload)
	grants := startGrants(b, a)
	project := grants.project
	buildEnv := grants.buildEnv(b)
	berthBlob := func(args ...string) {
		cmd := exec.CommandContext(b.Context(), bin, args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), buildEnv...)
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("berth-blob %v: %v\n%s", args, err, o)
		}
	}
	timed := func(f func()) float64 {
		// Start each transfer with no dirty pages left by the one before:
		// writeback of another's files would be timed with this one.
		syscall.Sync()
		start := time.Now()
		f()
		return blobPayload / time.Since(start).Seconds() / 1e6
	}
	var up, down [2][]float64 // [berth, plain]
	var upRaw, upBlocks []float64
	uploads := []func(){
		func() {
			up[0] = append(up[0], timed(func() {
				berthBlob("run", "--project="+project, "--outputs="+out, "--log-file="+filepath.Join(work, "build.log"), "--", "true")
			}))
		},
		func() {
			up[1] = append(up[1], timed(func() {
				zipPath := filepath.Join(work, "plain-result.zip")
				storeZip(b, out, zipPath)
				defer os.Remove(zipPath)
				if _, err := c.UploadFile(b.Context(), "bench", "plain/result.zip", openFile(b, zipPath), nil); err != nil {
					b.Fatal(err)
				}
			}))
		},
		func() {
			upRaw = append(upRaw, timed(func() {
				if _, err := c.UploadFile(b.Context(), "bench", "plain/app.bin", openFile(b, payload), nil); err != nil {
					b.Fatal(err)
				}
			}))
		},
		func() {
			upBlocks = append(upBlocks, timed(func() {
				_, err := c.UploadStream(b.Context(), "bench", "plain/app.bin", openFile(b, payload),
					&blockblob.UploadStreamOptions{BlockSize: blob.DefaultBlockSize, Concurrency: blob.DefaultConcurrency})
				if err != nil {
					b.Fatal(err)
				}
			}))
		},
	}
	for r := range b.N * blobRounds {
		// Each round starts the uploads at the next one, so that none
		// always follows the same neighbour on Azurite.
		for i := range uploads {
			uploads[(r+i)%len(uploads)]()
		}
		// Fetch what run delivered, as a build's source.
		copyBlob(b, c, "projects", blob.ResultName(project), "uploads", blob.SourceName(project))
		down[0] = append(down[0], timed(func() {
			dest := filepath.Join(work, "fetched")
			_ = os.RemoveAll(dest)
			berthBlob("fetch", "--project="+project, "--dest="+dest)
		}))
		down[1] = append(down[1], timed(func() {
			dest := filepath.Join(work, "plain")
			_ = os.RemoveAll(dest)
			plainFetch(b, c, "uploads", blob.SourceName(project), filepath.Join(work, "plain.zip"), dest)
		}))
	}
	report := func(what string, m [2][]float64, target bool) {
		berth, plain := framework.Median(m[0]), framework.Median(m[1])
		b.ReportMetric(berth, what+"-MB/s-berth-blob")
		b.ReportMetric(plain, what+"-MB/s-plain")
		b.ReportMetric(berth/plain, what+"-ratio")
		line := fmt.Sprintf("%-13s %d MiB x %d: berth-blob (manager's SAS URLs) %6.1f MB/s  plain azblob (connection string) %6.1f MB/s  ratio %.2f",
			what, blobPayload>>20, len(m[0]), berth, plain, berth/plain)
		if target {
			line += " (target >= 0.9)"
		}
		b.Log(line)
		var paired []float64
		for i := range min(len(m[0]), len(m[1])) {
			paired = append(paired, m[0][i]/m[1][i])
		}
		b.ReportMetric(framework.Median(paired), what+"-paired-ratio")
		b.Logf("  per round, MB/s: berth-blob %.0f, plain %.0f; median of the rounds' ratios %.2f", m[0], m[1], framework.Median(paired))
	}
	report("upload", up, true)
	report("upload-raw", [2][]float64{up[0], upRaw}, false)
	report("upload-blocks", [2][]float64{up[0], upBlocks}, false)
	report("fetch", down, true)
}

// scratchDir is the benchmark's working dir: on tmpfs (/dev/shm) where the
// machine has one. On a disk mounted with online discard (as this project's
// CI machine is), deleting a 200 MiB file slows the next large write, so
// each transfer would pay for the files the one before it removed.
func scratchDir(b *testing.B) string {
	dir, err := os.MkdirTemp("/dev/shm", "berth-bench-")
	if err != nil {
		return b.TempDir()
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// storeZip is the plain way to archive dir: archive/zip, every file stored.
func storeZip(b *testing.B, dir, zipPath string) {
	f, err := os.Create(zipPath)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: filepath.ToSlash(rel), Method: zip.Store})
		if err != nil {
			return err
		}
		_, err = io.Copy(w, openFile(b, p))
		return err
	})
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		b.Fatal(err)
	}
}

func writeRandom(b testing.TB, p string, n int64) {
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
