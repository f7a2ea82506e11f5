package audit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var key32 = []byte(strings.Repeat("k", MinKeyBytes))

func TestNewKeyringChecksItsKeys(t *testing.T) {
	for name, tc := range map[string]struct {
		current string
		keys    map[string][]byte
		want    string
	}{
		"empty":      {keys: nil, want: "the audit keyring is empty"},
		"short key":  {keys: map[string][]byte{"k1": []byte("short")}, want: `audit key "k1" is 5 bytes`},
		"bad id":     {keys: map[string][]byte{"a/b": key32}, want: `audit key id "a/b"`},
		"unknown id": {current: "k9", keys: map[string][]byte{"k1": key32}, want: `current audit key id "k9" is not in the keyring (k1)`},
	} {
		_, err := NewKeyring(tc.current, tc.keys)
		assert.ErrorContains(t, err, tc.want, name)
	}
	k, err := NewKeyring("", map[string][]byte{"k1": key32, "k2": key32})
	require.NoError(t, err)
	assert.Equal(t, "k2", k.Current, "the greatest id signs new rows")
}

func TestLoadKeyringReadsAMountedSecret(t *testing.T) {
	dir := t.TempDir()
	// The kubelet mounts a Secret as ..data and symlinks to it; both are skipped.
	require.NoError(t, os.Mkdir(filepath.Join(dir, "..data"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "k1"), append(key32, '\n'), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "k2"), key32, 0o600))
	k, err := LoadKeyring(dir, "k1")
	require.NoError(t, err)
	assert.Equal(t, "k1", k.Current)
	a, err := k.TextHMAC("k1", "instruction", "hello")
	require.NoError(t, err)
	b, err := k.TextHMAC("k2", "instruction", "hello")
	require.NoError(t, err)
	assert.Equal(t, a, b, "the trailing newline of a key file is not part of the key")
	c, err := k.TextHMAC("k1", "response", "hello")
	require.NoError(t, err)
	assert.NotEqual(t, a, c, "each field hashes in its own domain")
}

func TestMacFramesItsParts(t *testing.T) {
	k, err := NewKeyring("k1", map[string][]byte{"k1": key32})
	require.NoError(t, err)
	a, _ := k.mac("k1", []byte("ab"), []byte("c"))
	b, _ := k.mac("k1", []byte("a"), []byte("bc"))
	assert.NotEqual(t, a, b)
}
