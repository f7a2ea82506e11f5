package blob

import (
	"bufio"
	"context"
	"fmt"
	"hash"
	"hash/crc64"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
)

// sums are a spooled file's size and CRC-64. Its MD5 is left to the
// service: Put Blob computes and keeps the Content-MD5 of what it received,
// and computing it here would take longer than writing the zip.
type sums struct {
	size  int64
	crc64 []byte
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
	f, s, err := zipToFile(ctx, dir, spoolDir)
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

// zipToFile writes the archive of dir to a new file in spoolDir. The CRC-64
// is computed on another core as the bytes go by.
func zipToFile(ctx context.Context, dir, spoolDir string) (*os.File, sums, error) {
	f, err := os.CreateTemp(spoolDir, ".berth-result-*.zip")
	if err != nil {
		return nil, sums{}, err
	}
	fail := func(err error) (*os.File, sums, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, sums{}, err
	}
	c := crc64.New(crcTable)
	tee := newHashTee(c)
	bw := bufio.NewWriterSize(&teeWriter{w: f, tee: tee}, 1<<20)
	zerr := ZipDir(ctx, dir, bw)
	if zerr == nil {
		zerr = bw.Flush()
	}
	tee.close()
	if zerr != nil {
		return fail(zerr)
	}
	st, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	return f, sums{size: st.Size(), crc64: c.Sum(nil)}, nil
}

// teeWriter writes to w and hands a copy of what was written to the hasher.
type teeWriter struct {
	w   io.Writer
	tee *hashTee
}

func (t *teeWriter) Write(b []byte) (int, error) {
	n, err := t.w.Write(b)
	t.tee.write(b[:n])
	return n, err
}

// hashTee feeds a hash from its own goroutine, a few chunks behind, with a
// fixed set of buffers: the process allocates no memory per chunk.
type hashTee struct {
	full, free chan []byte
	done       chan struct{}
}

const (
	teeChunk   = 1 << 20
	teeBuffers = 4
)

func newHashTee(h hash.Hash) *hashTee {
	t := &hashTee{full: make(chan []byte, teeBuffers), free: make(chan []byte, teeBuffers), done: make(chan struct{})}
	for range teeBuffers {
		t.free <- make([]byte, 0, teeChunk)
	}
	go func() {
		defer close(t.done)
		for b := range t.full {
			h.Write(b)
			t.free <- b[:0]
		}
	}()
	return t
}

func (t *hashTee) write(b []byte) {
	for len(b) > 0 {
		buf := <-t.free
		n := min(len(b), cap(buf))
		t.full <- append(buf, b[:n]...)
		b = b[n:]
	}
}

func (t *hashTee) close() {
	close(t.full)
	<-t.done
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
			ContentType: "application/zip", CRC64: s.crc64,
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
