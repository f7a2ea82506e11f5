package blob

import (
	"errors"
	"io"
)

// ErrNotFound is returned, wrapped, for a blob or container that does not
// exist.
var ErrNotFound = errors.New("not found")

// ErrChanged is returned, wrapped, when a blob was replaced while it was
// being read.
var ErrChanged = errors.New("blob changed during the download")

// Object is an open blob download.
type Object struct {
	// Body streams the blob from the requested offset.
	Body io.ReadCloser
	// Size is the whole blob's size, -1 when unknown.
	Size int64
	// ETag identifies the blob's version.
	ETag string
	// MD5 is the blob's Content-MD5, when set.
	MD5 []byte
	// CRC32C is berth's CRC-32C metadata (hex), when set.
	CRC32C string
	// CRC64 is the CRC-64 metadata (hex) of blobs berth uploaded before it
	// recorded CRC-32C, when set.
	CRC64 string
}

// UploadOptions describe a blob being written.
type UploadOptions struct {
	ContentType string
	// CRC32C is the file's, computed as it was written; UploadFile records
	// it on the blob. The MD5 of a Put Blob is the service's own (a block
	// upload records none).
	CRC32C []byte
	// Progress, when set, is told how many bytes UploadFile has sent; the
	// count may go down when a request is retried.
	Progress func(sent int64)
}
