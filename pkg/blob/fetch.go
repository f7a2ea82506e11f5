package blob

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
)

// Source reads blobs. AzureStore is the real one, blobtest.Fake the test double.
type Source interface {
	// Download opens container/name from offset on; with etag set, the blob
	// must still be that version, or the error wraps ErrChanged.
	Download(ctx context.Context, container, name string, offset int64, etag string) (*Object, error)
}

// FetchOptions say what to fetch and where to unzip it.
type FetchOptions struct {
	Container string
	Name      string
	// Dest is the directory the archive is unzipped into; created if
	// missing.
	Dest string
	// TempDir holds the downloaded archive until it is unzipped; default
	// Dest's parent, so the archive lands on the same scratch disk.
	TempDir          string
	Limits           Limits
	Backoff          Backoff
	ProgressInterval time.Duration
}

// FetchStats describe a finished fetch.
type FetchStats struct {
	Bytes    int64
	Download time.Duration
	Unzip    UnzipStats
}

// Fetch downloads an archive, checks it, and unzips it safely into Dest.
func Fetch(ctx context.Context, src Source, o FetchOptions) (FetchStats, error) {
	log := logr.FromContextOrDiscard(ctx)
	tmpDir := o.TempDir
	if tmpDir == "" {
		tmpDir = filepath.Dir(filepath.Clean(o.Dest))
	}
	if err := os.MkdirAll(tmpDir, 0o755); err != nil {
		return FetchStats{}, fmt.Errorf("fetch %s/%s: %w", o.Container, o.Name, err)
	}
	f, err := os.CreateTemp(tmpDir, ".berth-fetch-*.zip")
	if err != nil {
		return FetchStats{}, fmt.Errorf("fetch %s/%s: %w", o.Container, o.Name, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()

	start := time.Now()
	n, err := DownloadTo(ctx, src, o.Container, o.Name, f, o.Backoff, o.ProgressInterval)
	if err != nil {
		return FetchStats{}, err
	}
	st := FetchStats{Bytes: n, Download: time.Since(start)}
	log.Info("downloaded", "blob", o.Container+"/"+o.Name, "bytes", n, "seconds", st.Download.Seconds(), "mbps", mbps(n, st.Download.Seconds()))
	if st.Unzip, err = Unzip(ctx, f, n, o.Dest, o.Limits); err != nil {
		return st, fmt.Errorf("unzip %s/%s: %w", o.Container, o.Name, err)
	}
	log.Info("unzipped", "dest", o.Dest, "files", st.Unzip.Files, "bytes", st.Unzip.Bytes)
	return st, nil
}

// WriterAtTruncater is a file the download writes into and can restart.
type WriterAtTruncater interface {
	io.Writer
	io.Seeker
	Truncate(size int64) error
}

// DownloadTo streams container/name into f, resuming from where a broken
// stream stopped and starting over if the blob changed. It checks the size
// always, and one sum the blob carries: berth's CRC-32C, else berth's older
// CRC-64, else the Content-MD5. It is computed as the bytes arrive, the
// slower two on another core.
func DownloadTo(ctx context.Context, src Source, container, name string, f WriterAtTruncater, b Backoff, interval time.Duration) (int64, error) {
	d := &download{src: src, container: container, name: name, f: f}
	d.reset()
	err := b.Do(ctx, "download "+container+"/"+name, d.attempt(interval))
	return d.offset, err
}

type download struct {
	src             Source
	container, name string
	f               WriterAtTruncater
	offset          int64
	etag            string
	// sum is the check chosen at the first response of this version of
	// the blob, fed across resumed attempts; nil checks the size only.
	sum     hash.Hash
	sumKind string
}

func (d *download) reset() {
	d.offset, d.etag = 0, ""
	d.sum, d.sumKind = nil, ""
}

// choose picks the check for obj's version, the fastest the blob carries:
// CRC-32C (berth's metadata, in hardware), CRC-64 (berth's before it), then
// MD5. Each proves the bytes.
func (d *download) choose(obj *Object) {
	if d.sumKind != "" {
		return
	}
	switch {
	case obj.CRC32C != "":
		d.sum, d.sumKind = crc32.New(castagnoli), "crc32c"
	case obj.CRC64 != "":
		d.sum, d.sumKind = crc64.New(crcTable), "crc64"
	case len(obj.MD5) > 0:
		d.sum, d.sumKind = md5.New(), "md5"
	default:
		d.sumKind = "size"
	}
}

func (d *download) restart() error {
	d.reset()
	if err := d.f.Truncate(0); err != nil {
		return Permanent(err)
	}
	_, err := d.f.Seek(0, io.SeekStart)
	return err
}

// attempt is one try: it continues from d.offset.
func (d *download) attempt(interval time.Duration) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		obj, err := d.src.Download(ctx, d.container, d.name, d.offset, d.etag)
		if errors.Is(err, ErrChanged) {
			// Replaced under us: start over on the new version.
			if rerr := d.restart(); rerr != nil {
				return rerr
			}
			return err
		}
		if err != nil {
			return err
		}
		defer obj.Body.Close()
		d.etag = obj.ETag
		p := startProgress(ctx, "download", d.container+"/"+d.name, obj.Size, interval)
		p.add(int(d.offset))
		defer p.finish()
		d.choose(obj)
		var w io.Writer = d.f
		var tee *hashTee
		switch {
		case d.sumKind == "crc32c":
			w = io.MultiWriter(d.f, d.sum) // in hardware: as fast as the copy
		case d.sum != nil:
			tee = newHashTee(d.sum) // MD5 and CRC-64 on another core
			w = &teeWriter{w: d.f, tee: tee}
		}
		buf := make([]byte, teeChunk)
		n, err := io.CopyBuffer(w, countingReader{r: obj.Body, p: p}, buf)
		if tee != nil {
			tee.close()
		}
		d.offset += n
		if err != nil {
			return fmt.Errorf("download %s/%s at byte %d: %w", d.container, d.name, d.offset, err)
		}
		if err := d.verify(obj); err != nil {
			// A corrupt copy: try again from the start.
			if rerr := d.restart(); rerr != nil {
				return rerr
			}
			return err
		}
		return nil
	}
}

func (d *download) verify(obj *Object) error {
	what := d.container + "/" + d.name
	if obj.Size >= 0 && d.offset != obj.Size {
		return fmt.Errorf("integrity check of %s: got %d bytes, the blob has %d", what, d.offset, obj.Size)
	}
	switch d.sumKind {
	case "md5":
		if got := d.sum.Sum(nil); !bytes.Equal(got, obj.MD5) {
			return fmt.Errorf("integrity check of %s: MD5 %x, the blob's Content-MD5 is %x", what, got, obj.MD5)
		}
	case "crc32c":
		if got := hex.EncodeToString(d.sum.Sum(nil)); got != obj.CRC32C {
			return fmt.Errorf("integrity check of %s: CRC-32C %s, the blob's is %s", what, got, obj.CRC32C)
		}
	case "crc64":
		if got := hex.EncodeToString(d.sum.Sum(nil)); got != obj.CRC64 {
			return fmt.Errorf("integrity check of %s: CRC-64 %s, the blob's is %s", what, got, obj.CRC64)
		}
	}
	return nil
}
