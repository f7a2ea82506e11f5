package blob_test

import (
	"io"
	"math/rand/v2"
)

// newDeterministic returns an endless reader of pseudo-random bytes.
func newDeterministic(seed uint64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	return rand.NewChaCha8(s)
}
