package blob

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"
)

// The blob metadata keys of berth's checksums (hex). berth records the
// CRC-32C (Castagnoli) of what it uploads: computed in hardware, it costs a
// few milliseconds for a 200 MiB result, where CRC-64 took 0.13 s and
// slowed the zip. fetch checks it, or the CRC-64 of blobs berth uploaded
// before, when present.
const (
	MetadataCRC32C = "berthcrc32c"
	MetadataCRC64  = "berthcrc64"
)

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	crcTable   = crc64.MakeTable(crc64.ECMA)
)

// StoreOptions tune the Azure client.
type StoreOptions struct {
	// ConnectionString, when set, authenticates with the account key (dev
	// and Azurite). Otherwise DefaultAzureCredential is used (workload
	// identity in production) against AccountURL.
	ConnectionString string
	// AccountURL is the blob endpoint, such as
	// https://myaccount.blob.core.windows.net.
	AccountURL string
	// BlockSize and Concurrency bound an upload's memory to about
	// BlockSize*Concurrency.
	BlockSize   int64
	Concurrency int
	// MaxRetries, RetryDelay and TryTimeout tune the SDK's retries of each
	// request; Backoff retries whole transfers on top of them.
	MaxRetries int32
	RetryDelay time.Duration
	TryTimeout time.Duration
	// Credential, when set, replaces DefaultAzureCredential with AccountURL.
	Credential azcore.TokenCredential
	// Transport, when set, sends the requests (a proxy, a private CA).
	Transport policy.Transporter
}

// Default upload shape: 8 MiB blocks, 4 in flight, so about 32 MiB of
// buffers.
const (
	DefaultBlockSize   = 8 << 20
	DefaultConcurrency = 4
)

// AzureStore is the real blob store, on the azblob SDK.
type AzureStore struct {
	client      *azblob.Client
	sharedKey   *azblob.SharedKeyCredential
	http        bool
	blockSize   int64
	concurrency int

	// userKey signs user-delegation SAS until userKeyExpiry.
	keyMu         sync.Mutex
	userKey       *service.UserDelegationCredential
	userKeyExpiry time.Time
}

// UserKeyLife is how long a user delegation key berth asks for lives
// (Azure allows 7 days). One key signs every URL that expires before it
// does, so Azure AD and the storage service are asked about once a day,
// not once a URL.
const UserKeyLife = 24 * time.Hour

// NewAzureStore makes a store from a connection string or, without one,
// from DefaultAzureCredential and the account URL.
func NewAzureStore(o StoreOptions) (*AzureStore, error) {
	copts := &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{
		MaxRetries: o.MaxRetries, RetryDelay: o.RetryDelay, TryTimeout: o.TryTimeout,
	}, Transport: o.Transport}}
	s := &AzureStore{blockSize: o.BlockSize, concurrency: o.Concurrency}
	if s.blockSize <= 0 {
		s.blockSize = DefaultBlockSize
	}
	if s.concurrency <= 0 {
		s.concurrency = DefaultConcurrency
	}
	var err error
	if o.ConnectionString != "" {
		cs, perr := parseConnectionString(o.ConnectionString)
		if perr != nil {
			return nil, perr
		}
		if s.sharedKey, err = azblob.NewSharedKeyCredential(cs.AccountName, cs.AccountKey); err != nil {
			return nil, fmt.Errorf("connection string: %w", err)
		}
		s.http = strings.HasPrefix(cs.BlobEndpoint, "http://")
		if s.client, err = azblob.NewClientWithSharedKeyCredential(cs.BlobEndpoint+"/", s.sharedKey, copts); err != nil {
			return nil, fmt.Errorf("blob client for %s: %w", cs.BlobEndpoint, err)
		}
		return s, nil
	}
	if o.AccountURL == "" {
		return nil, errors.New("no credentials: set a connection string (development) or an account URL for workload identity")
	}
	cred := o.Credential
	if cred == nil {
		if cred, err = azidentity.NewDefaultAzureCredential(nil); err != nil {
			return nil, fmt.Errorf("azure credential: %w", err)
		}
	}
	s.http = strings.HasPrefix(o.AccountURL, "http://")
	if s.client, err = azblob.NewClient(strings.TrimSuffix(o.AccountURL, "/")+"/", cred, copts); err != nil {
		return nil, fmt.Errorf("blob client for %s: %w", o.AccountURL, err)
	}
	return s, nil
}

// Client is the underlying azblob client.
func (s *AzureStore) Client() *azblob.Client { return s.client }

// Download opens container/name from offset on. When etag is set, the blob
// must still be that version. A missing blob is a permanent error.
func (s *AzureStore) Download(ctx context.Context, container, name string, offset int64, etag string) (*Object, error) {
	return downloadBlob(ctx, s.blockBlob(container, name), container, name, offset, etag)
}

// blockBlob is the client of one blob of the account.
func (s *AzureStore) blockBlob(container, name string) *blockblob.Client {
	return s.client.ServiceClient().NewContainerClient(container).NewBlockBlobClient(name)
}

// downloadBlob opens the blob bc (container/name, for messages) from offset on.
func downloadBlob(ctx context.Context, bc *blockblob.Client, container, name string, offset int64, etag string) (*Object, error) {
	o := &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: offset}}
	if etag != "" {
		e := azcore.ETag(etag)
		o.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &e}}
	}
	resp, err := bc.DownloadStream(ctx, o)
	if err != nil {
		switch {
		case bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound):
			return nil, Permanent(fmt.Errorf("%s/%s does not exist: %w", container, name, ErrNotFound))
		case bloberror.HasCode(err, bloberror.ConditionNotMet) || statusIs(err, http.StatusPreconditionFailed):
			return nil, fmt.Errorf("%s/%s: %w", container, name, ErrChanged)
		}
		return nil, fmt.Errorf("download %s/%s: %w", container, name, err)
	}
	obj := &Object{Body: resp.Body}
	if resp.ETag != nil {
		obj.ETag = string(*resp.ETag)
	}
	obj.Size = -1
	if resp.ContentRange != nil {
		if i := strings.LastIndexByte(*resp.ContentRange, '/'); i >= 0 {
			obj.Size, _ = strconv.ParseInt((*resp.ContentRange)[i+1:], 10, 64)
		}
	} else if resp.ContentLength != nil {
		obj.Size = *resp.ContentLength + offset
	}
	switch {
	case len(resp.BlobContentMD5) > 0:
		obj.MD5 = resp.BlobContentMD5
	case offset == 0 && len(resp.ContentMD5) > 0:
		obj.MD5 = resp.ContentMD5
	}
	for k, v := range resp.Metadata {
		switch {
		case v == nil:
		case strings.EqualFold(k, MetadataCRC32C):
			obj.CRC32C = *v
		case strings.EqualFold(k, MetadataCRC64):
			obj.CRC64 = *v
		}
	}
	return obj, nil
}

func statusIs(err error, code int) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == code
}

// Upload writes body to container/name as a block blob, with at most
// Concurrency blocks of BlockSize in memory. The blob's Content-MD5 and the
// berth CRC-64 metadata are set from the bytes sent. The blob is replaced
// only when the whole upload commits, so repeating it is safe.
func (s *AzureStore) Upload(ctx context.Context, container, name string, body io.Reader, o UploadOptions) error {
	return uploadBlobStream(ctx, s.blockBlob(container, name), container, name, body, o, s.blockSize, s.concurrency)
}

func uploadBlobStream(ctx context.Context, bc *blockblob.Client, container, name string, body io.Reader, o UploadOptions, blockSize int64, concurrency int) error {
	h := &blob.HTTPHeaders{}
	if o.ContentType != "" {
		h.BlobContentType = &o.ContentType
	}
	meta := map[string]*string{}
	hr := &hashingReader{r: body, md5: md5.New(), crc: crc32.New(castagnoli)}
	// The SDK commits the block list after the body reached EOF and reads
	// the headers and metadata only then: hashingReader fills them in at
	// EOF.
	hr.atEOF = func() {
		h.BlobContentMD5 = hr.md5.Sum(nil)
		c := hex.EncodeToString(hr.crc.Sum(nil))
		meta[MetadataCRC32C] = &c
	}
	_, err := bc.UploadStream(ctx, hr, &blockblob.UploadStreamOptions{
		BlockSize: blockSize, Concurrency: concurrency, HTTPHeaders: h, Metadata: meta,
	})
	if err != nil {
		if bloberror.HasCode(err, bloberror.ContainerNotFound) {
			return Permanent(fmt.Errorf("upload %s/%s: container %s does not exist; create it or fix the Organization's blob settings: %w", container, name, container, err))
		}
		return fmt.Errorf("upload %s/%s: %w", container, name, err)
	}
	if !hr.eof {
		return fmt.Errorf("upload %s/%s: the body did not reach its end", container, name)
	}
	return nil
}

// UploadFile writes the file f to container/name with the SDK's UploadFile:
// one Put Blob up to 256 MiB, Concurrency blocks of BlockSize read from the
// file above. The blob's CRC-32C metadata is o.CRC32C; a Put Blob's
// Content-MD5 is the service's own. The blob is replaced only when the
// upload commits.
func (s *AzureStore) UploadFile(ctx context.Context, container, name string, f *os.File, o UploadOptions) error {
	return uploadBlobFile(ctx, s.blockBlob(container, name), container, name, f, o, s.blockSize, s.concurrency)
}

func uploadBlobFile(ctx context.Context, bc *blockblob.Client, container, name string, f *os.File, o UploadOptions, blockSize int64, concurrency int) error {
	h := &blob.HTTPHeaders{}
	if o.ContentType != "" {
		h.BlobContentType = &o.ContentType
	}
	c := hex.EncodeToString(o.CRC32C)
	_, err := bc.UploadFile(ctx, f, &blockblob.UploadFileOptions{
		BlockSize: blockSize, Concurrency: uint16(concurrency), HTTPHeaders: h,
		Metadata: map[string]*string{MetadataCRC32C: &c}, Progress: o.Progress,
	})
	if err != nil {
		if bloberror.HasCode(err, bloberror.ContainerNotFound) {
			return Permanent(fmt.Errorf("upload %s/%s: container %s does not exist; create it or fix the Organization's blob settings: %w", container, name, container, err))
		}
		return fmt.Errorf("upload %s/%s: %w", container, name, err)
	}
	return nil
}

// hashingReader hashes what it reads and calls atEOF once at the end.
type hashingReader struct {
	r     io.Reader
	md5   hash.Hash
	crc   hash.Hash32
	eof   bool
	atEOF func()
}

func (h *hashingReader) Read(b []byte) (int, error) {
	n, err := h.r.Read(b)
	h.md5.Write(b[:n])
	h.crc.Write(b[:n])
	if errors.Is(err, io.EOF) && !h.eof {
		h.eof = true
		h.atEOF()
	}
	return n, err
}

// ReadURL returns a read-only SAS URL of container/name valid until
// expiry: an account-key SAS with a connection string, a user-delegation
// SAS with Azure AD credentials.
func (s *AzureStore) ReadURL(ctx context.Context, container, name string, expiry time.Time) (string, error) {
	return s.SignURL(ctx, container, name, sas.BlobPermissions{Read: true}, expiry)
}

// WritePermissions are what an upload of one block blob needs: create it,
// and write its blocks, block list, headers and metadata. They read,
// list and delete nothing.
var WritePermissions = sas.BlobPermissions{Create: true, Write: true}

// SignURL returns a SAS URL of the one blob container/name with perms,
// valid until expiry, signed as ReadURL's are.
func (s *AzureStore) SignURL(ctx context.Context, container, name string, perms sas.BlobPermissions, expiry time.Time) (string, error) {
	v := sas.BlobSignatureValues{
		Protocol:      sas.ProtocolHTTPS,
		ExpiryTime:    expiry.UTC(),
		Permissions:   perms.String(),
		ContainerName: container,
		BlobName:      name,
	}
	if s.http {
		v.Protocol = sas.ProtocolHTTPSandHTTP
	}
	var qp sas.QueryParameters
	var err error
	if s.sharedKey != nil {
		qp, err = v.SignWithSharedKey(s.sharedKey)
	} else {
		udc, uerr := s.userDelegationKey(ctx, expiry)
		if uerr != nil {
			return "", uerr
		}
		qp, err = v.SignWithUserDelegation(udc)
	}
	if err != nil {
		return "", fmt.Errorf("sign SAS for %s/%s: %w", container, name, err)
	}
	u := s.client.ServiceClient().NewContainerClient(container).NewBlobClient(name).URL()
	return u + "?" + qp.Encode(), nil
}

// userDelegationKey returns a user delegation key that outlives expiry:
// the cached one, or a new one for UserKeyLife (or until expiry, if later).
func (s *AzureStore) userDelegationKey(ctx context.Context, expiry time.Time) (*service.UserDelegationCredential, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if s.userKey != nil && s.userKeyExpiry.After(expiry) {
		return s.userKey, nil
	}
	// A key starts a little in the past to allow for clock skew.
	now := time.Now().UTC()
	keyExpiry := now.Add(UserKeyLife).Truncate(time.Second)
	if expiry.After(keyExpiry) {
		keyExpiry = expiry.UTC()
	}
	info := service.KeyInfo{Start: ptr(now.Add(-5 * time.Minute).Format(sas.TimeFormat)), Expiry: ptr(keyExpiry.Format(sas.TimeFormat))}
	udc, err := s.client.ServiceClient().GetUserDelegationCredential(ctx, info, nil)
	if err != nil {
		return nil, fmt.Errorf("get user delegation key: %w", err)
	}
	s.userKey, s.userKeyExpiry = udc, keyExpiry
	return udc, nil
}

func ptr[T any](v T) *T { return &v }
