package blob

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"berth.dev/berth/pkg/blob"
	"berth.dev/berth/test/framework"
)

// project is a small multi-file project: nested dirs, an executable, a
// binary-ish file, an empty file.
var project = map[string]string{
	"pom.xml":                           "<project><artifactId>shop</artifactId></project>\n",
	"mvnw*":                             "#!/bin/sh\necho mvnw \"$@\"\n",
	"src/main/java/shop/App.java":       "package shop;\nclass App { public static void main(String[] a) {} }\n",
	"src/main/resources/app.properties": strings.Repeat("key=value\n", 5000),
	"src/test/java/shop/AppTest.java":   "package shop;\nclass AppTest {}\n",
	"docs/empty.txt":                    "",
	"assets/logo.bin":                   string(randomBytes(300 << 10)),
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = io.ReadFull(rand.NewChaCha8([32]byte{7}), b)
	return b
}

// uploadSource zips files and stores them as the project's source.zip with
// the plain client, as berth's API would.
func (e *env) uploadSource(t *testing.T, projectID string, files map[string]string) {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, files)
	var buf bytes.Buffer
	require.NoError(t, blob.ZipDir(t.Context(), dir, &buf))
	e.uploadRaw(t, "uploads", blob.SourceName(projectID), buf.Bytes())
}

func (e *env) uploadRaw(t *testing.T, container, name string, b []byte) {
	t.Helper()
	_, err := e.client.UploadBuffer(t.Context(), container, name, b, nil)
	require.NoError(t, err)
}

func unzipToMap(t *testing.T, b []byte) map[string]string {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	require.NoError(t, err)
	out := map[string]string{}
	for _, f := range zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		rc, err := f.Open()
		require.NoError(t, err)
		data, err := io.ReadAll(rc)
		require.NoError(t, err)
		name := f.Name
		if f.Mode().Perm()&0o100 != 0 {
			name += "*"
		}
		out[name] = string(data)
	}
	return out
}

func TestProjectRoundTrip(t *testing.T) {
	e := setup(t)
	e.uploadSource(t, "shop", project)
	work := t.TempDir()

	r := e.run(t, work, nil, "fetch", "--project=shop", "--dest="+filepath.Join(work, "src"))
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, project, readTree(t, filepath.Join(work, "src")), "fetched tree")

	// The build: copy the sources to the outputs and say so.
	build := `cp -R src/. out/ && echo "built $(ls src | wc -l) entries" && echo warning >&2`
	r = e.run(t, work, nil, "run", "--project=shop", "--outputs="+filepath.Join(work, "out"),
		"--log-file="+filepath.Join(work, ".berth/build.log"), "--", "sh", "-c", "mkdir -p out && "+build)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "built 5 entries", "the container log gets the output")

	assert.Equal(t, project, unzipToMap(t, e.download(t, "projects", blob.ResultName("shop"))), "result.zip holds the outputs")
	log := string(e.download(t, "projects", blob.LogName("shop")))
	assert.Contains(t, log, "built 5 entries\n")
	assert.Contains(t, log, "warning\n")

	// berth-blob records the CRC-32C of what it uploads; a small result is
	// spooled and sent in one Put Blob, whose MD5 the service records.
	props, err := e.client.ServiceClient().NewContainerClient("projects").NewBlobClient(blob.ResultName("shop")).GetProperties(t.Context(), nil)
	require.NoError(t, err)
	result := e.download(t, "projects", blob.ResultName("shop"))
	sum := md5.Sum(result)
	assert.Equal(t, sum[:], props.ContentMD5)
	var crc string
	for k, v := range props.Metadata {
		if strings.EqualFold(k, blob.MetadataCRC32C) && v != nil {
			crc = *v
		}
	}
	assert.Equal(t, fmt.Sprintf("%08x", crc32.Checksum(result, crc32.MakeTable(crc32.Castagnoli))), crc, "CRC-32C metadata")
	assert.Equal(t, "application/zip", *props.ContentType)

	// And fetch checks them: the result fetched back is the project again.
	e.uploadRaw(t, "uploads", blob.SourceName("shop-again"), e.download(t, "projects", blob.ResultName("shop")))
	r = e.run(t, work, nil, "fetch", "--project=shop-again", "--dest="+filepath.Join(work, "again"))
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, project, readTree(t, filepath.Join(work, "again")))
}

func TestFailedBuildDeliversItsLogAndNoResult(t *testing.T) {
	e := setup(t)
	work := t.TempDir()
	r := e.run(t, work, nil, "run", "--project=broken", "--outputs="+filepath.Join(work, "out"),
		"--log-file="+filepath.Join(work, "build.log"), "--", "sh", "-c", "echo compile error; exit 7")
	assert.Equal(t, 7, r.code, "run exits with the command's code")
	assert.Equal(t, "compile error\n", string(e.download(t, "projects", blob.LogName("broken"))))
	_, err := e.client.ServiceClient().NewContainerClient("projects").NewBlobClient(blob.ResultName("broken")).GetProperties(t.Context(), nil)
	assert.Error(t, err, "no result for a failed build")
}

func TestMaliciousArchiveIsRefused(t *testing.T) {
	e := setup(t)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.Create("../../escaped.txt")
	require.NoError(t, err)
	_, _ = w.Write([]byte("pwned"))
	require.NoError(t, zw.Close())
	e.uploadRaw(t, "uploads", blob.SourceName("evil"), buf.Bytes())

	work := t.TempDir()
	dest := filepath.Join(work, "a", "src")
	r := e.run(t, work, nil, "fetch", "--project=evil", "--dest="+dest)
	assert.NotEqual(t, 0, r.code)
	assert.Contains(t, r.stderr, `entry "../../escaped.txt": climbs out of the destination with ".." (zip-slip)`)
	assert.NoFileExists(t, filepath.Join(work, "escaped.txt"))
	assert.NoFileExists(t, filepath.Join(work, "a", "escaped.txt"))
	assert.Equal(t, 1, strings.Count(r.stderr, "unsafe archive"), "refused once, not retried")
}

// deterministicFile writes n pseudo-random bytes to p and returns their
// SHA-256.
func deterministicFile(t *testing.T, p string, n int64) []byte {
	t.Helper()
	f, err := os.Create(p)
	require.NoError(t, err)
	h := sha256.New()
	_, err = io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8([32]byte{42}), n)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return h.Sum(nil)
}

// memoryBound is the most berth-blob may hold while uploading 1 GiB: 4
// blocks of 8 MiB in flight plus the runtime, the zip writer and the HTTP
// client. It does not grow with the upload's size.
const memoryBound = 128 << 20

func TestLargeUploadHoldsMemoryUnderBound(t *testing.T) {
	e := setup(t)
	work := t.TempDir()
	out := filepath.Join(work, "out")
	require.NoError(t, os.MkdirAll(out, 0o755))
	const size = 1 << 30
	sum := deterministicFile(t, filepath.Join(out, "app.bin"), size)

	start := time.Now()
	r := e.run(t, work, []string{"BERTH_BLOB_PROGRESS_INTERVAL=2s"}, "run", "--project=large", "--outputs="+out,
		"--log-file="+filepath.Join(work, "build.log"), "--", "true")
	took := time.Since(start)
	require.NoError(t, os.Remove(filepath.Join(out, "app.bin")))
	require.Equal(t, 0, r.code, r.stderr)
	t.Logf("1 GiB upload: %.1f s, %.0f MB/s, max RSS %d MiB (bound %d MiB)", took.Seconds(), size/took.Seconds()/1e6, r.maxRSS>>20, memoryBound>>20)
	assert.Less(t, r.maxRSS, int64(memoryBound), "berth-blob's peak memory")
	assert.Contains(t, r.stderr, "transfer progress", "a long transfer logs its progress")

	// What Azurite holds is the file: stream it back through the zip's one
	// stored entry and compare.
	resp, err := e.client.DownloadStream(t.Context(), "projects", blob.ResultName("large"), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	h := sha256.New()
	n, err := copyFirstEntry(h, bufio.NewReaderSize(resp.Body, 1<<20), size)
	require.NoError(t, err)
	assert.Equal(t, int64(size), n)
	assert.Equal(t, sum, h.Sum(nil), "the uploaded bytes are the file's")
}

// copyFirstEntry streams the data of a zip's first entry, which must be
// stored (not deflated), from a zip read front to back.
func copyFirstEntry(w io.Writer, r io.Reader, size int64) (int64, error) {
	var hdr [30]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	if string(hdr[:4]) != "PK\x03\x04" {
		return 0, fmt.Errorf("not a zip local header")
	}
	if method := uint16(hdr[8]) | uint16(hdr[9])<<8; method != zip.Store {
		return 0, fmt.Errorf("first entry has method %d, want stored", method)
	}
	nameLen := int(hdr[26]) | int(hdr[27])<<8
	extraLen := int(hdr[28]) | int(hdr[29])<<8
	if _, err := io.CopyN(io.Discard, r, int64(nameLen+extraLen)); err != nil {
		return 0, err
	}
	// Streamed entries carry their size after the data; the caller knows it.
	return io.CopyN(w, r, size)
}

func TestUploadFailsWhileAzuriteIsDownAndSucceedsOnRetry(t *testing.T) {
	e := setup(t)
	t.Cleanup(func() { _ = e.azurite.Start(t.Context()) })
	work := t.TempDir()
	out := filepath.Join(work, "out")
	require.NoError(t, os.MkdirAll(out, 0o755))
	sum := deterministicFile(t, filepath.Join(out, "app.bin"), 256<<20)
	args := []string{"run", "--project=outage", "--outputs=" + out, "--log-file=" + filepath.Join(work, "build.log"),
		"--block-size=1048576", "--concurrency=2", "--", "true"}

	// Stop Azurite as soon as the result's upload reports progress.
	cmd := e.command(t.Context(), work, []string{"BERTH_BLOB_PROGRESS_INTERVAL=50ms", "BERTH_BLOB_RETRIES=2"}, args...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var log strings.Builder
	stopped := false
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		log.WriteString(line + "\n")
		if !stopped && strings.Contains(line, "transfer progress") && strings.Contains(line, "build/result.zip") {
			e.azurite.Stop()
			stopped = true
		}
	}
	_ = cmd.Wait()
	require.True(t, stopped, "the upload was seen in progress:\n%s", log.String())
	assert.Equal(t, blob.ExitUploadFailed, cmd.ProcessState.ExitCode(), "run fails when the upload fails:\n%s", log.String())
	assert.Contains(t, log.String(), "giving up after 2 attempts")

	// The Job's next try, once Azurite is back, delivers.
	require.NoError(t, e.azurite.Start(t.Context()))
	r := e.run(t, work, nil, args...)
	require.Equal(t, 0, r.code, r.stderr)
	resp, err := e.client.DownloadStream(t.Context(), "projects", blob.ResultName("outage"), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	h := sha256.New()
	n, err := copyFirstEntry(h, resp.Body, 256<<20)
	require.NoError(t, err)
	assert.Equal(t, int64(256<<20), n)
	assert.Equal(t, sum, h.Sum(nil))
}

func TestSASURLReadsTheResultOnly(t *testing.T) {
	e := setup(t)
	work := t.TempDir()
	writeTree(t, filepath.Join(work, "out"), map[string]string{"app.jar": "jar bytes"})
	r := e.run(t, work, nil, "run", "--project=sas", "--outputs="+filepath.Join(work, "out"), "--log-file="+filepath.Join(work, "build.log"), "--", "true")
	require.Equal(t, 0, r.code, r.stderr)
	want := e.download(t, "projects", blob.ResultName("sas"))

	r = e.run(t, work, nil, "sas", "--project=sas", "--expiry=3s")
	require.Equal(t, 0, r.code, r.stderr)
	sasURL := strings.TrimSpace(r.stdout)
	issued := time.Now()
	status, body := get(t, sasURL)
	require.Equal(t, http.StatusOK, status, body)
	assert.Equal(t, want, []byte(body), "plain net/http downloads the result")

	u, err := url.Parse(sasURL)
	require.NoError(t, err)
	u.Path = strings.Replace(u.Path, blob.ResultName("sas"), blob.LogName("sas"), 1)
	status, _ = get(t, u.String())
	assert.Equal(t, http.StatusForbidden, status, "the URL reads no other blob")

	time.Sleep(time.Until(issued.Add(4 * time.Second)))
	status, _ = get(t, sasURL)
	assert.Equal(t, http.StatusForbidden, status, "the URL is refused after expiry")

	r = e.run(t, work, nil, "sas", "--project=sas")
	require.Equal(t, 0, r.code)
	q, err := url.ParseQuery(strings.SplitN(strings.TrimSpace(r.stdout), "?", 2)[1])
	require.NoError(t, err)
	expiry, err := time.Parse(time.RFC3339, q.Get("se"))
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now().Add(time.Hour), expiry, time.Minute, "valid 1 hour by default")
	assert.Equal(t, "r", q.Get("sp"), "read only")
}

func get(t *testing.T, u string) (int, string) {
	t.Helper()
	return getWith(t, http.DefaultClient, u)
}

// TestUserDelegationSASReadsTheResultOnly: with Azure AD credentials (an
// Azurite on HTTPS that takes bearer tokens) the URL is a user-delegation
// SAS, and it reads the result with a plain HTTP client, no other blob, and
// nothing after it expires.
func TestUserDelegationSASReadsTheResultOnly(t *testing.T) {
	a := framework.AzuriteOAuthServer(t)
	keys := &keyCounter{Transporter: a.HTTPClient()}
	store, err := blob.NewAzureStore(blob.StoreOptions{
		AccountURL: a.BlobEndpoint(), Credential: a.TokenCredential(), Transport: keys,
	})
	require.NoError(t, err)
	c := store.Client()
	if _, err := c.CreateContainer(t.Context(), "projects", nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		require.NoError(t, err)
	}
	result := []byte("result bytes")
	_, err = c.UploadBuffer(t.Context(), "projects", blob.ResultName("udk"), result, nil)
	require.NoError(t, err)
	_, err = c.UploadBuffer(t.Context(), "projects", blob.LogName("udk"), []byte("log"), nil)
	require.NoError(t, err)

	sasURL, err := blob.ReadURL(t.Context(), store, "projects", "udk", "build/result.zip", 3*time.Second, time.Now())
	require.NoError(t, err)
	u, err := url.Parse(sasURL)
	require.NoError(t, err)
	q := u.Query()
	assert.NotEmpty(t, q.Get("skoid"), "signed with a user delegation key")
	assert.Equal(t, "https", q.Get("spr"), "HTTPS only")
	issued := time.Now()

	hc := a.HTTPClient()
	status, body := getWith(t, hc, sasURL)
	require.Equal(t, http.StatusOK, status, body)
	assert.Equal(t, string(result), body)

	u.Path = strings.Replace(u.Path, blob.ResultName("udk"), blob.LogName("udk"), 1)
	status, _ = getWith(t, hc, u.String())
	assert.Equal(t, http.StatusForbidden, status, "the URL reads no other blob")

	// One key signs every URL that expires before it: berth-manager does
	// not ask for a key per grant.
	for range 3 {
		u, err := blob.ReadURL(t.Context(), store, "projects", "udk", "logs/build.log", time.Hour, time.Now())
		require.NoError(t, err)
		status, body := getWith(t, hc, u)
		require.Equal(t, http.StatusOK, status, body)
	}
	assert.Equal(t, int32(1), keys.n.Load(), "user delegation keys asked for")

	time.Sleep(time.Until(issued.Add(4 * time.Second)))
	status, _ = getWith(t, hc, sasURL)
	assert.Equal(t, http.StatusForbidden, status, "the URL is refused after expiry")
}

// keyCounter counts the requests for a user delegation key.
type keyCounter struct {
	policy.Transporter
	n atomic.Int32
}

func (k *keyCounter) Do(req *http.Request) (*http.Response, error) {
	if req.URL.Query().Get("comp") == "userdelegationkey" {
		k.n.Add(1)
	}
	return k.Transporter.Do(req)
}

func getWith(t *testing.T, hc *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := hc.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}
