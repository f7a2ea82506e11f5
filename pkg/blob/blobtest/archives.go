package blobtest

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"hash/crc32"
	"io/fs"
	"strconv"
)

// Malicious archives that berth-blob must refuse, for the unit tests of its
// unzip and for the integration tests that run the berth-blob binary.

// SymlinkChain is a zip whose dangling symlink "l" leads out of the
// destination only through a chain of the archive's own links: "a/up" is
// "..", "p" is "a/up", and "l" is "p/../x".
func SymlinkChain() []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range []struct {
		name, target string
		mode         fs.FileMode
	}{
		{"a/", "", fs.ModeDir | 0o755},
		{"a/up", "..", fs.ModeSymlink | 0o777},
		{"p", "a/up", fs.ModeSymlink | 0o777},
		{"l", "p/../x", fs.ModeSymlink | 0o777},
	} {
		h := &zip.FileHeader{Name: e.name, Method: zip.Store}
		h.SetMode(e.mode)
		w, err := zw.CreateHeader(h)
		must(err)
		_, err = w.Write([]byte(e.target))
		must(err)
	}
	must(zw.Close())
	return buf.Bytes()
}

// must panics on an error writing to memory, which cannot happen.
func must(err error) {
	if err != nil {
		panic(err)
	}
}

// deflated is size zero bytes, deflated, and their CRC-32.
func deflated(size int) ([]byte, uint32) {
	var buf bytes.Buffer
	fw, err := flate.NewWriter(&buf, flate.BestCompression)
	must(err)
	zeros := make([]byte, size)
	_, err = fw.Write(zeros)
	must(err)
	must(fw.Close())
	return buf.Bytes(), crc32.ChecksumIEEE(zeros)
}

// ZeroEntries is a zip of n entries, each of size zero bytes, each with
// its own copy of the compressed data.
func ZeroEntries(n, size int) []byte {
	data, sum := deflated(size)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := range n {
		w, err := zw.CreateRaw(&zip.FileHeader{
			Name: strconv.Itoa(i), Method: zip.Deflate, CRC32: sum,
			CompressedSize64: uint64(len(data)), UncompressedSize64: uint64(size),
		})
		must(err)
		_, err = w.Write(data)
		must(err)
	}
	must(zw.Close())
	return buf.Bytes()
}

// SharedStreamBomb is a zip of one local file of size zero bytes, and n
// directory entries that all point at it: a non-recursive zip bomb, each
// of whose entries passes a per-entry ratio check.
func SharedStreamBomb(n, size int) []byte {
	data, sum := deflated(size)
	var z rawZip
	z.Write(localHeader("0", zip.Deflate, sum, len(data), size))
	z.Write(data)
	for i := range n {
		z.central(strconv.Itoa(i), zip.Deflate, sum, len(data), size, 0)
	}
	return z.finish()
}

// NestedEntry is a zip whose stored entry "a" holds the local header and
// data of entry "b", both in the directory.
func NestedEntry() []byte {
	inner := []byte("inner")
	b := append(localHeader("b", zip.Store, crc32.ChecksumIEEE(inner), len(inner), len(inner)), inner...)
	var z rawZip
	z.Write(localHeader("a", zip.Store, crc32.ChecksumIEEE(b), len(b), len(b)))
	z.Write(b)
	z.central("a", zip.Store, crc32.ChecksumIEEE(b), len(b), len(b), 0)
	z.central("b", zip.Store, crc32.ChecksumIEEE(inner), len(inner), len(inner), 30+len("a"))
	return z.finish()
}

// rawZip writes zip structures by hand, for archives archive/zip will not
// write: local files go in the buffer, directory entries, free to point
// anywhere, are added by finish.
type rawZip struct {
	bytes.Buffer
	dir bytes.Buffer
	n   int
}

func localHeader(name string, method uint16, crc uint32, csize, usize int) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0x04034b50)
	b = binary.LittleEndian.AppendUint16(b, 20) // version needed
	b = binary.LittleEndian.AppendUint16(b, 0)  // flags
	b = binary.LittleEndian.AppendUint16(b, method)
	b = binary.LittleEndian.AppendUint32(b, 0) // time and date
	b = binary.LittleEndian.AppendUint32(b, crc)
	b = binary.LittleEndian.AppendUint32(b, uint32(csize))
	b = binary.LittleEndian.AppendUint32(b, uint32(usize))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(name)))
	b = binary.LittleEndian.AppendUint16(b, 0) // extra
	return append(b, name...)
}

func (z *rawZip) central(name string, method uint16, crc uint32, csize, usize, offset int) {
	b := binary.LittleEndian.AppendUint32(nil, 0x02014b50)
	b = binary.LittleEndian.AppendUint16(b, 20) // version made by: FAT
	b = binary.LittleEndian.AppendUint16(b, 20) // version needed
	b = binary.LittleEndian.AppendUint16(b, 0)  // flags
	b = binary.LittleEndian.AppendUint16(b, method)
	b = binary.LittleEndian.AppendUint32(b, 0) // time and date
	b = binary.LittleEndian.AppendUint32(b, crc)
	b = binary.LittleEndian.AppendUint32(b, uint32(csize))
	b = binary.LittleEndian.AppendUint32(b, uint32(usize))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(name)))
	b = binary.LittleEndian.AppendUint64(b, 0) // extra, comment, disk, internal attributes
	b = binary.LittleEndian.AppendUint32(b, 0) // external attributes
	b = binary.LittleEndian.AppendUint32(b, uint32(offset))
	z.dir.Write(append(b, name...))
	z.n++
}

// finish appends the directory and its end record.
func (z *rawZip) finish() []byte {
	start := z.Len()
	z.Write(z.dir.Bytes())
	b := binary.LittleEndian.AppendUint32(nil, 0x06054b50)
	b = binary.LittleEndian.AppendUint32(b, 0) // disk numbers
	b = binary.LittleEndian.AppendUint16(b, uint16(z.n))
	b = binary.LittleEndian.AppendUint16(b, uint16(z.n))
	b = binary.LittleEndian.AppendUint32(b, uint32(z.dir.Len()))
	b = binary.LittleEndian.AppendUint32(b, uint32(start))
	b = binary.LittleEndian.AppendUint16(b, 0) // comment
	z.Write(b)
	return z.Bytes()
}
