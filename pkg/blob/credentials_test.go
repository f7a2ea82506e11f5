package blob

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseConnectionString(t *testing.T) {
	cs, err := parseConnectionString("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net")
	require.NoError(t, err)
	assert.Equal(t, "https://acct.blob.core.windows.net", cs.BlobEndpoint)
	cs, err = parseConnectionString("AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/;")
	require.NoError(t, err)
	assert.Equal(t, "http://127.0.0.1:10000/devstoreaccount1", cs.BlobEndpoint)
	_, err = parseConnectionString("BlobEndpoint=https://x;SharedAccessSignature=sv=1")
	assert.Error(t, err)
}
