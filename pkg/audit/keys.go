package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// MinKeyBytes is the shortest key the keyring takes: HMAC-SHA256's block of
// entropy.
const MinKeyBytes = 32

// Keyring holds the HMAC keys by id. New rows are signed with Current; a row
// signed with an older key stays verifiable as long as its key is kept.
type Keyring struct {
	Current string
	keys    map[string][]byte
}

// NewKeyring checks the keys and the current id.
func NewKeyring(current string, keys map[string][]byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("the audit keyring is empty; create a Secret with one key of %d or more random bytes, such as: kubectl create secret generic berth-audit-keys --from-literal=k1=$(openssl rand -hex 32)", MinKeyBytes)
	}
	ids := make([]string, 0, len(keys))
	for id, k := range keys {
		if id == "" || strings.ContainsAny(id, " \t\n/") {
			return nil, fmt.Errorf("audit key id %q: use letters, digits, '-' or '_', such as k2", id)
		}
		if len(k) < MinKeyBytes {
			return nil, fmt.Errorf("audit key %q is %d bytes; use %d or more random bytes (openssl rand -hex 32)", id, len(k), MinKeyBytes)
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if current == "" {
		current = ids[len(ids)-1]
	}
	if _, ok := keys[current]; !ok {
		return nil, fmt.Errorf("current audit key id %q is not in the keyring (%s); name one of those", current, strings.Join(ids, ", "))
	}
	return &Keyring{Current: current, keys: keys}, nil
}

// LoadKeyring reads a mounted Secret: each file in dir is one key, named by
// its id. current names the key new rows are signed with; empty takes the
// greatest id, so that adding k2 beside k1 rotates to it. Files whose names
// start with "." are the kubelet's and are skipped.
func LoadKeyring(dir, current string) (*Keyring, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read audit keys: %w", err)
	}
	keys := map[string][]byte{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read audit key %s: %w", e.Name(), err)
		}
		if info, err := os.Stat(filepath.Join(dir, e.Name())); err == nil && info.IsDir() {
			continue
		}
		keys[e.Name()] = []byte(strings.TrimSpace(string(data)))
	}
	return NewKeyring(current, keys)
}

// mac returns HMAC-SHA256 of parts under the key id, each part framed by its
// length so that no two different lists of parts hash alike.
func (k *Keyring) mac(id string, parts ...[]byte) ([]byte, error) {
	key, ok := k.keys[id]
	if !ok {
		return nil, fmt.Errorf("audit key id %q is not in the keyring; add the key it names to the Secret", id)
	}
	h := hmac.New(sha256.New, key)
	var n [8]byte
	for _, p := range parts {
		l := uint64(len(p))
		for i := range n {
			n[i] = byte(l >> (56 - 8*i))
		}
		h.Write(n[:])
		h.Write(p)
	}
	return h.Sum(nil), nil
}
