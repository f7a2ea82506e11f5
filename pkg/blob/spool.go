package blob

import (
	"bufio"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
)

// sums are a spooled file's size and CRC-32C. Its MD5 is left to the
// service: Put Blob computes and keeps the Content-MD5 of what it received,
// and computing it here would take longer than writing the zip.
type sums struct {
	size   int64
	crc32c []byte
}

// spool zips dir into a temp file when the tree is at most o.SpoolLimit
// bytes, hashing it as it is written. It reports false, leaving nothing
// behind, when the tree is larger or the file cannot be written (a full
// disk): the archive is then streamed instead.
func spool(ctx context.Context, dir string, o RunOptions) (*os.File, sums, bool) {
	limit := o.SpoolLimit
	if limit == 0 {
		limit = DefaultSpoolLimit
	}
	if limit < 0 || !treeAtMost(dir, limit) {
		return nil, sums{}, false
	}
	spoolDir := o.SpoolDir
	if spoolDir == "" {
		spoolDir = filepath.Dir(o.LogFile)
	}
	log := logr.FromContextOrDiscard(ctx)
	f, s, err := zipToFile(ctx, dir, spoolDir, nil)
	if err != nil {
		log.Info("could not write the archive to a file, streaming it instead", "dir", spoolDir, "err", err.Error())
		return nil, sums{}, false
	}
	return f, s, true
}

// treeAtMost reports whether the regular files below dir add up to at most
// limit bytes.
func treeAtMost(dir string, limit int64) bool {
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if total += info.Size(); total > limit {
			return fs.SkipAll
		}
		return nil
	})
	return err == nil && total <= limit
}

// zipToFile writes the archive of dir (the entries keep takes) to a new
// file in spoolDir, with its CRC-32C computed as the bytes go by (in
// hardware: a few milliseconds for 200 MiB, so on the writer's own core).
func zipToFile(ctx context.Context, dir, spoolDir string, keep Keep) (*os.File, sums, error) {
	f, err := os.CreateTemp(spoolDir, ".berth-*.zip")
	if err != nil {
		return nil, sums{}, err
	}
	fail := func(err error) (*os.File, sums, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, sums{}, err
	}
	c := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(f, c), 1<<20)
	zerr := ZipTree(ctx, dir, bw, keep)
	if zerr == nil {
		zerr = bw.Flush()
	}
	if zerr != nil {
		return fail(zerr)
	}
	st, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	return f, sums{size: st.Size(), crc32c: c.Sum(nil)}, nil
}

// UploadTree zips the entries of dir that keep takes into a file in
// spoolDir, then uploads it to container/name with the archive's CRC-32C,
// retried with b. It returns the archive's size. A developer's tool puts a
// project's sources up with it.
func UploadTree(ctx context.Context, sink Sink, container, name, dir, spoolDir string, keep Keep, b Backoff) (int64, error) {
	f, s, err := zipToFile(ctx, dir, spoolDir, keep)
	if err != nil {
		return 0, err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	o := RunOptions{Backoff: b, ProgressInterval: DefaultProgressInterval}
	return s.size, uploadSpooled(ctx, sink, container, name, f, s, o)
}

// uploadSpooled uploads the spooled archive with retries, from the start of
// the file each time.
func uploadSpooled(ctx context.Context, sink Sink, container, name string, f *os.File, s sums, o RunOptions) error {
	what := "upload " + container + "/" + name
	log := logr.FromContextOrDiscard(ctx)
	return o.Backoff.Do(ctx, what, func(ctx context.Context) error {
		if _, err := f.Seek(0, 0); err != nil {
			return Permanent(fmt.Errorf("%s: %w", what, err))
		}
		log.Info("uploading", "blob", container+"/"+name, "bytes", s.size)
		start := time.Now()
		p := startProgress(ctx, "upload", container+"/"+name, s.size, o.ProgressInterval)
		defer p.finish()
		err := sink.UploadFile(ctx, container, name, f, UploadOptions{
			ContentType: "application/zip", CRC32C: s.crc32c,
			Progress: func(sent int64) { p.n.Store(sent) },
		})
		if err != nil {
			return err
		}
		secs := time.Since(start).Seconds()
		log.Info("uploaded", "blob", container+"/"+name, "bytes", s.size, "seconds", secs, "mbps", mbps(s.size, secs))
		return nil
	})
}
