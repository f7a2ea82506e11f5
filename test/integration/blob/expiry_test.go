package blob

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"berth.dev/berth/pkg/blob"
)

// expiringGranter signs real SAS URLs on Azurite, as berth-manager does;
// the first URL of each blob and access has already expired.
type expiringGranter struct {
	store *blob.AzureStore

	mu    sync.Mutex
	asked map[blob.GrantRequest]int
}

func (g *expiringGranter) Grant(ctx context.Context, req blob.GrantRequest) (blob.Grant, error) {
	g.mu.Lock()
	g.asked[req]++
	first := g.asked[req] == 1
	g.mu.Unlock()
	expiry := time.Now().Add(time.Hour)
	if first {
		// Expired a minute ago, but cached as if it had an hour left: what
		// a client holds when its clock is off, or the grant outlived the
		// key that signed it.
		expiry = time.Now().Add(-time.Minute)
	}
	perms := sas.BlobPermissions{Read: true}
	if req.Access == blob.AccessWrite {
		perms = blob.WritePermissions
	}
	u, err := g.store.SignURL(ctx, req.Container, req.Name, perms, expiry)
	return blob.Grant{URL: u, Expiry: time.Now().Add(time.Hour)}, err
}

func TestAnExpiredGrantIsDroppedAndAskedForAgain(t *testing.T) {
	e := setup(t)
	store, err := blob.NewAzureStore(blob.StoreOptions{ConnectionString: e.azurite.ConnectionString()})
	require.NoError(t, err)
	g := &expiringGranter{store: store, asked: map[blob.GrantRequest]int{}}
	gs := blob.NewGrantStore(g, blob.StoreOptions{MaxRetries: 1, RetryDelay: 10 * time.Millisecond})
	retry := blob.Backoff{Attempts: 3, Initial: 10 * time.Millisecond}

	// Put a project's sources up through the store, as kubectl berth does.
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"main.go": "package main\n"})
	project := "expiry-" + filepath.Base(dir)
	_, err = blob.UploadTree(t.Context(), gs, "uploads", blob.SourceName(project), dir, "", nil, retry)
	require.NoError(t, err)

	// Read it back, as the build's fetch does.
	f, err := os.Create(filepath.Join(t.TempDir(), "source.zip"))
	require.NoError(t, err)
	defer f.Close()
	_, err = blob.DownloadTo(t.Context(), gs, "uploads", blob.SourceName(project), f, retry, time.Minute)
	require.NoError(t, err)
	_, err = f.Seek(0, io.SeekStart)
	require.NoError(t, err)
	got, err := io.ReadAll(f)
	require.NoError(t, err)
	assert.Equal(t, e.download(t, "uploads", blob.SourceName(project)), got)
	assert.True(t, bytes.HasPrefix(got, []byte("PK")))

	// Each was refused once (403) with the expired URL, which the store
	// dropped, and asked for once more.
	assert.Equal(t, map[blob.GrantRequest]int{
		{Container: "uploads", Name: blob.SourceName(project), Access: blob.AccessWrite}: 2,
		{Container: "uploads", Name: blob.SourceName(project), Access: blob.AccessRead}:  2,
	}, g.asked)
}
