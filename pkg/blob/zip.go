package blob

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// sniffBytes is how much of a file is test-compressed to decide whether
// deflating it is worth the CPU.
const sniffBytes = 256 << 10

// ZipDir writes the tree at dir to w as a zip archive. Regular files,
// directories and symlinks (as links) are kept with their permissions.
// Files that do not compress (jars, images, archives, random data) are
// stored rather than deflated, so zipping costs little more than reading.
func ZipDir(ctx context.Context, dir string, w io.Writer) error {
	return ZipTree(ctx, dir, w, nil)
}

// Keep decides whether ZipTree takes an entry, named by its slash path
// below the tree's root; a directory left out is not walked. An error
// stops the zip.
type Keep func(rel string, d fs.DirEntry) (bool, error)

// ZipTree is ZipDir of the entries keep takes (all of them when keep is
// nil).
func ZipTree(ctx context.Context, dir string, w io.Writer, keep Keep) error {
	zw := zip.NewWriter(w)
	zw.RegisterCompressor(zip.Deflate, func(out io.Writer) (io.WriteCloser, error) {
		return flate.NewWriter(out, flate.BestSpeed)
	})
	sniff := make([]byte, sniffBytes)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		if keep != nil {
			ok, err := keep(filepath.ToSlash(rel), d)
			if err != nil {
				return err
			}
			if !ok && d.IsDir() {
				return fs.SkipDir
			}
			if !ok {
				return nil
			}
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := zip.FileInfoHeader(info)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			h.Name += "/"
			_, err = zw.CreateHeader(h)
			return err
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			h.Method = zip.Store
			fw, err := zw.CreateHeader(h)
			if err != nil {
				return err
			}
			_, err = io.WriteString(fw, target)
			return err
		case d.Type().IsRegular():
			return addFile(zw, h, p, sniff)
		}
		return nil // sockets, devices, pipes: not build outputs
	})
	if err != nil {
		return fmt.Errorf("zip %s: %w", dir, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("zip %s: %w", dir, err)
	}
	return nil
}

func addFile(zw *zip.Writer, h *zip.FileHeader, p string, sniff []byte) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.ReadFull(f, sniff)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return err
	}
	h.Method = zip.Deflate
	if !compressible(sniff[:n]) {
		h.Method = zip.Store
	}
	fw, err := zw.CreateHeader(h)
	if err != nil {
		return err
	}
	if _, err := fw.Write(sniff[:n]); err != nil {
		return err
	}
	_, err = io.Copy(fw, f)
	return err
}

// compressible reports whether deflate saves at least 5% on b.
func compressible(b []byte) bool {
	if len(b) < 4096 {
		return true
	}
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, flate.BestSpeed)
	_, _ = fw.Write(b)
	_ = fw.Close()
	return buf.Len() < len(b)*95/100
}
