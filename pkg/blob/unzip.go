package blob

import (
	"archive/zip"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
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
	// MaxTotalRatio caps the ratio of all entries' uncompressed size to
	// the archive's size, for archives that unpack to more than
	// TotalRatioMinBytes (default 200). It stops bombs made of many
	// entries, each too small for MaxRatio.
	MaxTotalRatio int64
}

const (
	// RatioMinBytes is the size below which an entry's compression ratio
	// is not checked: small runs of zeros are legitimate and harmless.
	RatioMinBytes = 1 << 20
	// TotalRatioMinBytes is the uncompressed size below which an archive's
	// overall ratio is not checked, so a small archive of text is fine.
	TotalRatioMinBytes = 16 << 20
)

// DefaultLimits are the limits fetch applies unless told otherwise.
func DefaultLimits() Limits {
	return Limits{MaxEntries: 100_000, MaxTotalBytes: 16 << 30, MaxFileBytes: 4 << 30, MaxRatio: 1000, MaxTotalRatio: 200}
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
	if l.MaxTotalRatio <= 0 {
		l.MaxTotalRatio = d.MaxTotalRatio
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
// paths, paths through the archive's symlinks, symlinks that escape), or
// if it is a zip bomb (a limit broken, entries sharing data). Names,
// symlinks, overlaps and limits are checked before anything is written,
// and the limits again on the bytes actually inflated. On an error dest
// may hold part of the archive; nothing outside it is touched.
func Unzip(ctx context.Context, r io.ReaderAt, size int64, dest string, l Limits) (UnzipStats, error) {
	l = l.withDefaults()
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return UnzipStats{}, Permanent(fmt.Errorf("read archive: %w", err))
	}
	if err := checkArchive(zr, size, l); err != nil {
		return UnzipStats{}, err
	}
	targets, err := readSymlinks(zr)
	if err != nil {
		return UnzipStats{}, err
	}
	if err := checkSymlinks(zr, targets); err != nil {
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
		if err := extractSymlink(root, f, targets[entryPath(f.Name)]); err != nil {
			return st, err
		}
		st.Symlinks++
	}
	return st, checkCreatedSymlinks(dest, links)
}

// checkArchive refuses, before anything is written, an archive whose
// directory breaks a limit, names a path outside dest, or whose entries
// share data.
func checkArchive(zr *zip.Reader, size int64, l Limits) error {
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
	if err := checkOverlaps(zr, size); err != nil {
		return err
	}
	if total > TotalRatioMinBytes && total/uint64(size) > uint64(l.MaxTotalRatio) {
		return unsafeEntry("", "%d bytes unpack to %d bytes, a ratio of %d:1 above the limit of %d:1 for the whole archive", size, total, total/uint64(size), l.MaxTotalRatio)
	}
	return nil
}

// localHeaderMinLen is the fixed part of a local file header, which
// precedes an entry's name, extra field and data.
const localHeaderMinLen = 30

// checkOverlaps refuses entries that share bytes of the archive: a bomb
// points many directory entries at one compressed stream, each small
// enough for the per-entry limits. archive/zip does not expose where a
// local header starts, only where its data does, so an entry's span is
// taken from the fixed part of its header to the end of its data.
func checkOverlaps(zr *zip.Reader, size int64) error {
	type span struct {
		start, data, end int64
		f                *zip.File
	}
	spans := make([]span, 0, len(zr.File))
	for _, f := range zr.File {
		off, err := f.DataOffset()
		if err != nil {
			return unsafeEntry(f.Name, "has no readable local header: %v", err)
		}
		if off < localHeaderMinLen || off > size || f.CompressedSize64 > uint64(size-off) {
			return unsafeEntry(f.Name, "has %d bytes of data at offset %d, past the end of the archive of %d bytes", f.CompressedSize64, off, size)
		}
		spans = append(spans, span{off - localHeaderMinLen, off, off + int64(f.CompressedSize64), f})
	}
	slices.SortStableFunc(spans, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	var last span // the span reaching furthest so far
	for i, s := range spans {
		if i > 0 && s.start < last.end {
			return unsafeEntry(s.f.Name, "overlaps entry %q in the archive (its data is at offset %d); entries that share bytes are a zip bomb", last.f.Name, s.data)
		}
		if s.end > last.end {
			last = s
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

// extractSymlink creates the symlink f, whose target readSymlinks and
// checkSymlinks have accepted.
func extractSymlink(root *os.Root, f *zip.File, target string) error {
	name := strings.TrimSuffix(f.Name, "/")
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

// maxSymlinkTarget is the longest symlink target accepted, PATH_MAX on
// Linux.
const maxSymlinkTarget = 4096

// readSymlinks reads every symlink's target before anything is written,
// keyed by the link's path, and refuses targets that are empty, too long,
// absolute or that leave dest as written.
func readSymlinks(zr *zip.Reader) (map[string]string, error) {
	targets := map[string]string{}
	for _, f := range zr.File {
		if f.Mode()&fs.ModeSymlink == 0 {
			continue
		}
		p := entryPath(f.Name)
		if _, ok := targets[p]; ok {
			return nil, unsafeEntry(f.Name, "appears twice in the archive, or over a directory")
		}
		rc, err := f.Open()
		if err != nil {
			return nil, unsafeEntry(f.Name, "cannot be read: %v", err)
		}
		b, err := io.ReadAll(io.LimitReader(rc, maxSymlinkTarget+1))
		rc.Close()
		if err != nil {
			return nil, unsafeEntry(f.Name, "cannot be read: %v", err)
		}
		target := string(b)
		switch {
		case len(b) > maxSymlinkTarget || target == "":
			return nil, unsafeEntry(f.Name, "symlink target is empty or longer than %d bytes", maxSymlinkTarget)
		case strings.HasPrefix(target, "/") || filepath.IsAbs(target):
			return nil, unsafeEntry(f.Name, "symlink to absolute path %q escapes the destination", target)
		case !inside(path.Join(path.Dir(p), target)):
			return nil, unsafeEntry(f.Name, "symlink to %q escapes the destination", target)
		}
		targets[p] = target
	}
	return targets, nil
}

// entryPath is an entry's path relative to dest, as compared with the
// archive's symlinks: no trailing slash, no "." or empty components.
func entryPath(name string) string {
	return path.Clean(strings.TrimSuffix(name, "/"))
}

// checkSymlinks applies two rules, before anything is written, to an
// archive whose symlinks have the given targets:
//   - no entry's path goes through a symlink of the archive, so nothing is
//     written, nor linked, through one;
//   - no symlink leads outside dest once its target is resolved lexically
//     and through the archive's other symlinks, even if it dangles.
func checkSymlinks(zr *zip.Reader, targets map[string]string) error {
	if len(targets) == 0 {
		return nil
	}
	for _, f := range zr.File {
		p := entryPath(f.Name)
		for i := range len(p) {
			if p[i] != '/' {
				continue
			}
			if _, ok := targets[p[:i]]; ok {
				return unsafeEntry(f.Name, "its path goes through %q, a symlink in the archive; store it under the path the link points to", p[:i])
			}
		}
	}
	r := symlinkResolver{targets: targets, resolved: map[string]string{}}
	for _, f := range zr.File {
		if f.Mode()&fs.ModeSymlink == 0 {
			continue
		}
		p := entryPath(f.Name)
		switch _, err := r.resolve(p, 0); {
		case errors.Is(err, errSymlinkLeaves):
			return unsafeEntry(f.Name, "symlink to %q resolves, through the archive's symlinks, outside the destination", targets[p])
		case errors.Is(err, errSymlinkDepth):
			return unsafeEntry(f.Name, "symlink to %q goes through more than %d nested symlinks, or loops", targets[p], maxSymlinkDepth)
		}
	}
	return nil
}

// maxSymlinkDepth is how deep symlinks may nest, as on Linux.
const maxSymlinkDepth = 40

var (
	errSymlinkLeaves = errors.New("symlink leads outside the destination")
	errSymlinkDepth  = errors.New("symlinks nest too deep")
)

// symlinkResolver follows the archive's symlinks on their paths alone, so
// a link is judged by where it leads whether or not that exists.
type symlinkResolver struct {
	targets  map[string]string // link path -> target as written
	resolved map[string]string // link path -> where it leads, "" for dest
}

// resolve returns where the link at p leads, relative to dest, following
// the other links it goes through. Targets are relative: readSymlinks
// refuses the others.
func (r *symlinkResolver) resolve(p string, depth int) (string, error) {
	if to, ok := r.resolved[p]; ok {
		return to, nil
	}
	if depth > maxSymlinkDepth {
		return "", errSymlinkDepth
	}
	cur := path.Dir(p)
	if cur == "." {
		cur = ""
	}
	for _, part := range strings.Split(r.targets[p], "/") {
		switch part {
		case "", ".":
		case "..":
			if cur == "" {
				return "", errSymlinkLeaves
			}
			if i := strings.LastIndexByte(cur, '/'); i >= 0 {
				cur = cur[:i]
			} else {
				cur = ""
			}
		default:
			if cur != "" {
				cur += "/"
			}
			cur += part
			if _, ok := r.targets[cur]; ok {
				to, err := r.resolve(cur, depth+1)
				if err != nil {
					return "", err
				}
				cur = to
			}
		}
	}
	r.resolved[p] = cur
	return cur, nil
}

// checkCreatedSymlinks resolves every symlink once all exist, in case dest
// held links of its own: a chain of links must not lead out of dest. An
// escaping link is removed.
func checkCreatedSymlinks(dest string, links []*zip.File) error {
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
