package blob

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
)

// The grant API. A build Pod holds no storage credential: berth-blob asks
// berth-manager for a SAS URL of each blob it reads or writes, proving who
// it is with the Pod's projected ServiceAccount token, and berth-manager
// answers only for the blobs of that Pod's own project.
const (
	// GrantPath is the endpoint on berth-manager's webhook port.
	GrantPath = "/v1/blob/grants"
	// TokenAudience is the audience of the token a build Pod presents; the
	// API server binds it to the Pod, so it dies with the Pod.
	TokenAudience = "berth.dev/blob"
	// DefaultTokenFile is where the admission webhook mounts that token.
	DefaultTokenFile = "/var/run/secrets/berth.dev/blob/token"
)

// Access is what a grant allows on its blob.
type Access string

const (
	// AccessRead reads one blob.
	AccessRead Access = "read"
	// AccessWrite creates or replaces one blob; it reads, lists and
	// deletes nothing.
	AccessWrite Access = "write"
)

// GrantRequest asks for a URL of one blob.
type GrantRequest struct {
	Container string `json:"container"`
	Name      string `json:"name"`
	Access    Access `json:"access"`
}

// Grant is a SAS URL of one blob, with what it allows, until Expiry.
type Grant struct {
	URL    string    `json:"url"`
	Expiry time.Time `json:"expiry"`
}

// GrantError is berth-manager's refusal, as JSON.
type GrantError struct {
	Error string `json:"error"`
}

// GrantClient asks berth-manager for grants.
type GrantClient struct {
	// ManagerURL is berth-manager's base URL, such as
	// https://berth-webhook.berth-system.svc.
	ManagerURL string
	// TokenFile holds the Pod's token; it is read on every request, since
	// the kubelet refreshes it.
	TokenFile string
	HTTP      *http.Client
}

// NewGrantClient makes a client of berth-manager at managerURL, trusting
// caPEM (berth's own CA) or, when it is empty, the system's roots.
func NewGrantClient(managerURL, tokenFile string, caPEM []byte) (*GrantClient, error) {
	if !strings.HasPrefix(managerURL, "https://") {
		return nil, fmt.Errorf("manager URL %q is not an https URL; use berth-manager's, such as https://berth-webhook.berth-system.svc", managerURL)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("the manager's CA holds no PEM certificate")
		}
		tc.RootCAs = pool
	}
	if tokenFile == "" {
		tokenFile = DefaultTokenFile
	}
	return &GrantClient{
		ManagerURL: strings.TrimSuffix(managerURL, "/"),
		TokenFile:  tokenFile,
		HTTP:       &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}},
	}, nil
}

// Grant asks for one URL. A refusal (a 4xx) is permanent; a manager that
// cannot be reached, or answers 5xx, is worth asking again.
func (c *GrantClient) Grant(ctx context.Context, req GrantRequest) (Grant, error) {
	what := fmt.Sprintf("ask berth-manager at %s to %s %s/%s", c.ManagerURL, req.Access, req.Container, req.Name)
	token, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return Grant{}, Permanent(fmt.Errorf("%s: read the Pod's token: %w; the admission webhook mounts it at %s", what, err, DefaultTokenFile))
	}
	body, err := json.Marshal(req)
	if err != nil {
		return Grant{}, Permanent(err)
	}
	return postGrant(ctx, c.HTTP, c.ManagerURL+GrantPath, strings.TrimSpace(string(token)), body, what)
}

// postGrant posts body to url and reads the grant in the answer. A
// non-empty token is sent as the bearer; otherwise hc's transport
// authenticates.
func postGrant(ctx context.Context, hc *http.Client, url, token string, body []byte, what string) (Grant, error) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return Grant{}, Permanent(fmt.Errorf("%s: %w", what, err))
	}
	hr.Header.Set("Content-Type", "application/json")
	if token != "" {
		hr.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(hr)
	if err != nil {
		return Grant{}, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Grant{}, fmt.Errorf("%s: %w", what, err)
	}
	if resp.StatusCode != http.StatusOK {
		var ge GrantError
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &ge) == nil && ge.Error != "" {
			msg = ge.Error
		}
		err := fmt.Errorf("%s: %s: %s", what, resp.Status, msg)
		if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
			return Grant{}, Permanent(err)
		}
		return Grant{}, err
	}
	var g Grant
	if err := json.Unmarshal(b, &g); err != nil || g.URL == "" {
		return Grant{}, fmt.Errorf("%s: the answer is not a grant: %q", what, b)
	}
	return g, nil
}

// Granter hands out URLs of single blobs: GrantClient for a build Pod,
// ProjectClient for a developer.
type Granter interface {
	Grant(ctx context.Context, req GrantRequest) (Grant, error)
}

// GrantStore reads and writes blobs through URLs from berth-manager. It
// is the Source and Sink of a build Pod, which holds no credential, and
// of a developer's tool.
type GrantStore struct {
	grants      Granter
	opts        *blockblob.ClientOptions
	blockSize   int64
	concurrency int

	mu    sync.Mutex
	cache map[GrantRequest]Grant
}

// NewGrantStore makes a store asking g for URLs, with o's block shape and
// SDK retries (its credentials are not used).
func NewGrantStore(g Granter, o StoreOptions) *GrantStore {
	s := &GrantStore{grants: g, blockSize: o.BlockSize, concurrency: o.Concurrency, cache: map[GrantRequest]Grant{}}
	if s.blockSize <= 0 {
		s.blockSize = DefaultBlockSize
	}
	if s.concurrency <= 0 {
		s.concurrency = DefaultConcurrency
	}
	s.opts = &blockblob.ClientOptions{ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{
		MaxRetries: o.MaxRetries, RetryDelay: o.RetryDelay, TryTimeout: o.TryTimeout,
	}, Transport: o.Transport}}
	return s
}

// grantSlack is how long a cached URL must still be valid to be used
// again.
const grantSlack = 2 * time.Minute

// client returns a client of one blob through a granted URL, cached while
// it has time left.
func (s *GrantStore) client(ctx context.Context, container, name string, access Access) (*blockblob.Client, GrantRequest, error) {
	req := GrantRequest{Container: container, Name: name, Access: access}
	s.mu.Lock()
	g, ok := s.cache[req]
	s.mu.Unlock()
	if !ok || time.Until(g.Expiry) < grantSlack {
		var err error
		if g, err = s.grants.Grant(ctx, req); err != nil {
			return nil, req, err
		}
		s.mu.Lock()
		s.cache[req] = g
		s.mu.Unlock()
	}
	bc, err := blockblob.NewClientWithNoCredential(g.URL, s.opts)
	if err != nil {
		return nil, req, Permanent(fmt.Errorf("client for the granted URL of %s/%s: %w", container, name, err))
	}
	return bc, req, nil
}

// forget drops a URL the service refused, such as one that expired, so
// the next attempt asks again.
func (s *GrantStore) forget(req GrantRequest, err error) {
	if statusIs(err, http.StatusForbidden) {
		s.mu.Lock()
		delete(s.cache, req)
		s.mu.Unlock()
	}
}

// Download opens container/name through a read grant.
func (s *GrantStore) Download(ctx context.Context, container, name string, offset int64, etag string) (*Object, error) {
	bc, req, err := s.client(ctx, container, name, AccessRead)
	if err != nil {
		return nil, err
	}
	obj, err := downloadBlob(ctx, bc, container, name, offset, etag)
	s.forget(req, err)
	return obj, err
}

// Upload writes body to container/name through a write grant.
func (s *GrantStore) Upload(ctx context.Context, container, name string, body io.Reader, o UploadOptions) error {
	bc, req, err := s.client(ctx, container, name, AccessWrite)
	if err != nil {
		return err
	}
	err = uploadBlobStream(ctx, bc, container, name, body, o, s.blockSize, s.concurrency)
	s.forget(req, err)
	return err
}

// UploadFile writes f to container/name through a write grant.
func (s *GrantStore) UploadFile(ctx context.Context, container, name string, f *os.File, o UploadOptions) error {
	bc, req, err := s.client(ctx, container, name, AccessWrite)
	if err != nil {
		return err
	}
	err = uploadBlobFile(ctx, bc, container, name, f, o, s.blockSize, s.concurrency)
	s.forget(req, err)
	return err
}
