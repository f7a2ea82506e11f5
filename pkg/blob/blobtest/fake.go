package blobtest

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"berth.dev/berth/pkg/blob"
)

// Fake is an in-memory blob store for unit tests. Hooks inject failures.
type Fake struct {
	mu    sync.Mutex
	blobs map[string]*fakeBlob
	// DownloadHook, when set, runs before each Download; an error it
	// returns is the download's.
	DownloadHook func(container, name string, offset int64) error
	// BreakAfter, when > 0, makes each download body fail after that many
	// bytes, as a dropped connection would.
	BreakAfter int64
	// UploadHook, when set, runs before each Upload.
	UploadHook func(container, name string) error
	// Downloads and Uploads count the calls; FileUploads counts the
	// UploadFile calls among the Uploads.
	Downloads, Uploads, FileUploads int
}

type fakeBlob struct {
	data   []byte
	etag   string
	md5    []byte
	crc32c string
	crc64  string
	ctype  string
}

var (
	_ blob.Source = &Fake{}
	_ blob.Sink   = &Fake{}
	_ blob.Signer = &Fake{}
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// NewFake returns an empty Fake.
func NewFake() *Fake { return &Fake{blobs: map[string]*fakeBlob{}} }

// Put stores data as container/name, with or without its MD5 and CRC-32C.
func (f *Fake) Put(container, name string, data []byte, withHashes bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := &fakeBlob{data: bytes.Clone(data), etag: strconv.Itoa(len(f.blobs)) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	if withHashes {
		m := md5.Sum(data)
		b.md5 = m[:]
		b.crc32c = hex.EncodeToString(crc32cOf(data))
	}
	f.blobs[container+"/"+name] = b
}

// SetMD5 overrides a blob's recorded MD5, to simulate corruption.
func (f *Fake) SetMD5(container, name string, sum []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blobs[container+"/"+name].md5 = sum
}

// SetCRC32C overrides a blob's CRC-32C metadata (hex); empty removes it.
func (f *Fake) SetCRC32C(container, name, sum string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blobs[container+"/"+name].crc32c = sum
}

// SetCRC64 sets a blob's CRC-64 metadata (hex), as berth recorded it before
// CRC-32C; empty removes it.
func (f *Fake) SetCRC64(container, name, sum string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blobs[container+"/"+name].crc64 = sum
}

// Get returns a blob's bytes and content type.
func (f *Fake) Get(container, name string) ([]byte, string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.blobs[container+"/"+name]
	if !ok {
		return nil, "", false
	}
	return bytes.Clone(b.data), b.ctype, true
}

// Download implements blob.Source.
func (f *Fake) Download(ctx context.Context, container, name string, offset int64, etag string) (*blob.Object, error) {
	f.mu.Lock()
	f.Downloads++
	hook, brk := f.DownloadHook, f.BreakAfter
	b, ok := f.blobs[container+"/"+name]
	f.mu.Unlock()
	if hook != nil {
		if err := hook(container, name, offset); err != nil {
			return nil, err
		}
	}
	if !ok {
		return nil, blob.Permanent(fmt.Errorf("%s/%s does not exist: %w", container, name, blob.ErrNotFound))
	}
	if etag != "" && etag != b.etag {
		return nil, fmt.Errorf("%s/%s: %w", container, name, blob.ErrChanged)
	}
	var body io.Reader = bytes.NewReader(b.data[offset:])
	if brk > 0 && int64(len(b.data))-offset > brk {
		body = io.MultiReader(io.LimitReader(body, brk), errReader{})
	}
	return &blob.Object{Body: io.NopCloser(body), Size: int64(len(b.data)), ETag: b.etag, MD5: b.md5, CRC32C: b.crc32c, CRC64: b.crc64}, nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

// Upload implements blob.Sink.
func (f *Fake) Upload(ctx context.Context, container, name string, body io.Reader, o blob.UploadOptions) error {
	f.mu.Lock()
	f.Uploads++
	hook := f.UploadHook
	f.mu.Unlock()
	if hook != nil {
		if err := hook(container, name); err != nil {
			return err
		}
	}
	data, err := io.ReadAll(body)
	if err != nil {
		return fmt.Errorf("upload %s/%s: %w", container, name, err)
	}
	f.Put(container, name, data, true)
	f.mu.Lock()
	f.blobs[container+"/"+name].ctype = o.ContentType
	f.mu.Unlock()
	return nil
}

// UploadFile implements blob.Sink. It fails when o.CRC32C is not the file's.
func (f *Fake) UploadFile(ctx context.Context, container, name string, file *os.File, o blob.UploadOptions) error {
	f.mu.Lock()
	f.FileUploads++
	f.mu.Unlock()
	data, err := io.ReadAll(file)
	if err != nil {
		return fmt.Errorf("upload %s/%s: %w", container, name, err)
	}
	if sum := crc32cOf(data); !bytes.Equal(sum, o.CRC32C) {
		return fmt.Errorf("upload %s/%s: CRC-32C %x given, %x computed", container, name, o.CRC32C, sum)
	}
	if o.Progress != nil {
		o.Progress(int64(len(data)))
	}
	return f.Upload(ctx, container, name, bytes.NewReader(data), blob.UploadOptions{ContentType: o.ContentType})
}

// ReadURL implements blob.Signer with a fake URL.
func (f *Fake) ReadURL(ctx context.Context, container, name string, expiry time.Time) (string, error) {
	return fmt.Sprintf("https://fake.blob/%s/%s?se=%s&sp=r", container, name, expiry.UTC().Format(time.RFC3339)), nil
}

func crc32cOf(b []byte) []byte {
	h := crc32.New(castagnoli)
	h.Write(b)
	return h.Sum(nil)
}
