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
	// CRC64 is berth's CRC-64 metadata (hex), when set.
	CRC64 string
}

// UploadOptions describe a blob being written.
type UploadOptions struct {
	ContentType string
	// CRC64 and, when set, MD5 are the file's, computed as it was written;
	// UploadFile records them on the blob. Without an MD5, Put Blob
	// records the one the service computes (a block upload records none).
	MD5, CRC64 []byte
	// Progress, when set, is told how many bytes UploadFile has sent; the
	// count may go down when a request is retried.
	Progress func(sent int64)
}
