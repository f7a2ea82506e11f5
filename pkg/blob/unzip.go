package blob

import (
	"archive/zip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Limits bound what an archive may unpack to. A zero field takes its
// default.
type Limits struct {
	// MaxEntries caps the number of entries (default 100,000).
	MaxEntries int
	// MaxTotalBytes caps the uncompressed size of all entries (default
	// 16 GiB; the scratch volume is the real bound).
	MaxTotalBytes int64
	// MaxFileBytes caps one entry's uncompressed size (default 4 GiB).
	MaxFileBytes int64
	// MaxRatio caps one entry's uncompressed/compressed ratio, for entries
	// above RatioMinBytes (default 1000; text compresses about 10x).
	MaxRatio int64
}

// RatioMinBytes is the size below which an entry's compression ratio is
// not checked: small runs of zeros are legitimate and harmless.
const RatioMinBytes = 1 << 20

// DefaultLimits are the limits fetch applies unless told otherwise.
func DefaultLimits() Limits {
	return Limits{MaxEntries: 100_000, MaxTotalBytes: 16 << 30, MaxFileBytes: 4 << 30, MaxRatio: 1000}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxEntries <= 0 {
		l.MaxEntries = d.MaxEntries
	}
	if l.MaxTotalBytes <= 0 {
		l.MaxTotalBytes = d.MaxTotalBytes
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = d.MaxFileBytes
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = d.MaxRatio
	}
	return l
}

// UnsafeArchiveError is an archive refused before or while unpacking: it
// names the entry (empty for the whole archive), what is wrong, and the
// limit broken, if any.
type UnsafeArchiveError struct {
	Entry  string
	Reason string
}

func (e *UnsafeArchiveError) Error() string {
	if e.Entry == "" {
		return "unsafe archive refused: " + e.Reason
	}
	return fmt.Sprintf("unsafe archive refused: entry %q: %s", e.Entry, e.Reason)
}

func unsafeEntry(entry, format string, args ...any) error {
	return Permanent(&UnsafeArchiveError{Entry: entry, Reason: fmt.Sprintf(format, args...)})
}

// UnzipStats count what was unpacked.
type UnzipStats struct {
	Files, Dirs, Symlinks int
	Bytes                 int64
}

// Unzip unpacks the zip archive r of size bytes into dest, refusing the
// whole archive if any entry would land outside dest (zip-slip, absolute
// paths, symlinks that escape), or if it breaks a limit (zip bombs). The
// limits are checked on the archive's directory before anything is
// written, and again on the bytes actually inflated. On an error dest may
// hold part of the archive; nothing outside it is touched.
func Unzip(ctx context.Context, r io.ReaderAt, size int64, dest string, l Limits) (UnzipStats, error) {
	l = l.withDefaults()
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return UnzipStats{}, Permanent(fmt.Errorf("read archive: %w", err))
	}
	if err := checkArchive(zr, l); err != nil {
		return UnzipStats{}, err
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return UnzipStats{}, err
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return UnzipStats{}, err
	}
	defer root.Close()

	var st UnzipStats
	var links []*zip.File
	for _, f := range zr.File {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		name := strings.TrimSuffix(f.Name, "/")
		switch mode := f.Mode(); {
		case mode&fs.ModeSymlink != 0:
			links = append(links, f) // last, so nothing is written through them
		case mode.IsDir():
			if err := root.MkdirAll(name, 0o755); err != nil {
				return st, unsafeEntry(f.Name, "cannot create directory: %v", err)
			}
			st.Dirs++
		case mode.IsRegular():
			n, err := extractFile(root, f, name, l, st.Bytes)
			st.Bytes += n
			if err != nil {
				return st, err
			}
			st.Files++
		default:
			return st, unsafeEntry(f.Name, "is a %s, not a file, directory or symlink", mode.Type())
		}
	}
	for _, f := range links {
		if err := extractSymlink(root, dest, f); err != nil {
			return st, err
		}
		st.Symlinks++
	}
	return st, checkSymlinks(dest, links)
}

// checkArchive refuses, before anything is written, an archive whose
// directory breaks a limit or names a path outside dest.
func checkArchive(zr *zip.Reader, l Limits) error {
	if n := len(zr.File); n > l.MaxEntries {
		return unsafeEntry("", "%d entries, above the limit of %d entries", n, l.MaxEntries)
	}
	var total uint64
	for _, f := range zr.File {
		if err := checkName(f.Name); err != nil {
			return err
		}
		if f.UncompressedSize64 > uint64(l.MaxFileBytes) {
			return unsafeEntry(f.Name, "uncompressed size %d bytes is above the per-file limit of %d bytes", f.UncompressedSize64, l.MaxFileBytes)
		}
		if f.UncompressedSize64 > RatioMinBytes {
			if f.CompressedSize64 == 0 || f.UncompressedSize64/f.CompressedSize64 > uint64(l.MaxRatio) {
				return unsafeEntry(f.Name, "compression ratio %d:1 (%d bytes from %d) is above the limit of %d:1", ratio(f), f.UncompressedSize64, f.CompressedSize64, l.MaxRatio)
			}
		}
		total += f.UncompressedSize64
		if total > uint64(l.MaxTotalBytes) {
			return unsafeEntry(f.Name, "brings the archive's uncompressed size to %d bytes, above the total limit of %d bytes", total, l.MaxTotalBytes)
		}
	}
	return nil
}

func ratio(f *zip.File) uint64 {
	if f.CompressedSize64 == 0 {
		return f.UncompressedSize64
	}
	return f.UncompressedSize64 / f.CompressedSize64
}

// checkName refuses names that are absolute or climb out of the archive's
// root.
func checkName(name string) error {
	switch {
	case name == "" || name == "/":
		return unsafeEntry(name, "has an empty name")
	case strings.ContainsRune(name, 0):
		return unsafeEntry(name, "has a NUL byte in its name")
	case strings.Contains(name, `\`):
		return unsafeEntry(name, `has a backslash in its name; zip paths use "/"`)
	case strings.HasPrefix(name, "/") || filepath.IsAbs(name) || (len(name) > 1 && name[1] == ':'):
		return unsafeEntry(name, "is an absolute path")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return unsafeEntry(name, "climbs out of the destination with \"..\" (zip-slip)")
		}
	}
	return nil
}

// extractFile writes one regular file, never beyond its declared size nor
// past the limits, whatever the compressed stream holds.
func extractFile(root *os.Root, f *zip.File, name string, l Limits, before int64) (int64, error) {
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return 0, unsafeEntry(f.Name, "cannot create its directory: %v", err)
		}
	}
	rc, err := f.Open()
	if err != nil {
		return 0, unsafeEntry(f.Name, "cannot be read: %v", err)
	}
	defer rc.Close()
	out, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.Mode().Perm()&0o755|0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return 0, unsafeEntry(f.Name, "appears twice in the archive, or over a directory")
		}
		return 0, unsafeEntry(f.Name, "cannot be created: %v", err)
	}
	limit := min(int64(f.UncompressedSize64), l.MaxFileBytes, l.MaxTotalBytes-before)
	n, err := io.Copy(out, io.LimitReader(rc, limit+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	switch {
	case n > limit:
		return n, unsafeEntry(f.Name, "inflates past its declared size of %d bytes or the limits (%d per file, %d in total)", f.UncompressedSize64, l.MaxFileBytes, l.MaxTotalBytes)
	case errors.Is(err, zip.ErrFormat):
		// archive/zip stops an entry at its declared size with ErrFormat.
		return n, unsafeEntry(f.Name, "inflates past its declared size of %d bytes, or is corrupt", f.UncompressedSize64)
	case errors.Is(err, zip.ErrChecksum):
		return n, unsafeEntry(f.Name, "is corrupt: %v", err)
	case err != nil:
		return n, fmt.Errorf("write %s: %w", f.Name, err)
	}
	return n, nil
}

// extractSymlink creates a symlink whose target, relative, stays inside
// dest as written.
func extractSymlink(root *os.Root, dest string, f *zip.File) error {
	rc, err := f.Open()
	if err != nil {
		return unsafeEntry(f.Name, "cannot be read: %v", err)
	}
	b, err := io.ReadAll(io.LimitReader(rc, 4097))
	rc.Close()
	if err != nil {
		return unsafeEntry(f.Name, "cannot be read: %v", err)
	}
	target := string(b)
	name := strings.TrimSuffix(f.Name, "/")
	switch {
	case len(b) > 4096 || target == "":
		return unsafeEntry(f.Name, "symlink target is empty or longer than 4096 bytes")
	case strings.HasPrefix(target, "/") || filepath.IsAbs(target):
		return unsafeEntry(f.Name, "symlink to absolute path %q escapes the destination", target)
	case !inside(path.Join(path.Dir(name), target)):
		return unsafeEntry(f.Name, "symlink to %q escapes the destination", target)
	}
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return unsafeEntry(f.Name, "cannot create its directory: %v", err)
		}
	}
	if err := root.Symlink(target, name); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return unsafeEntry(f.Name, "appears twice in the archive, or over a directory")
		}
		return unsafeEntry(f.Name, "cannot create symlink: %v", err)
	}
	return nil
}

// inside reports whether a slash path, relative to the destination, stays
// in it once cleaned.
func inside(p string) bool {
	p = path.Clean(p)
	return p != ".." && !strings.HasPrefix(p, "../")
}

// checkSymlinks resolves every symlink once all exist: a chain of links,
// each harmless as written, must not lead out of dest either. An escaping
// link is removed.
func checkSymlinks(dest string, links []*zip.File) error {
	if len(links) == 0 {
		return nil
	}
	realDest, err := filepath.EvalSymlinks(dest)
	if err != nil {
		return err
	}
	for _, f := range links {
		p := filepath.Join(dest, filepath.FromSlash(strings.TrimSuffix(f.Name, "/")))
		resolved, err := filepath.EvalSymlinks(p)
		if err != nil {
			continue // dangling: it leads nowhere
		}
		rel, err := filepath.Rel(realDest, resolved)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			_ = os.Remove(p)
			return unsafeEntry(f.Name, "symlink resolves to %s, outside the destination", resolved)
		}
	}
	return nil
}
