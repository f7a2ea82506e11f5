package blob

import (
	"hash"
	"io"
)

// teeWriter writes to w and hands a copy of what was written to the hasher.
type teeWriter struct {
	w   io.Writer
	tee *hashTee
}

func (t *teeWriter) Write(b []byte) (int, error) {
	n, err := t.w.Write(b)
	t.tee.write(b[:n])
	return n, err
}

// hashTee feeds a hash from its own goroutine, a few chunks behind, with a
// fixed set of buffers: the process allocates no memory per chunk.
type hashTee struct {
	full, free chan []byte
	done       chan struct{}
}

const (
	teeChunk   = 1 << 20
	teeBuffers = 4
)

func newHashTee(h hash.Hash) *hashTee {
	t := &hashTee{full: make(chan []byte, teeBuffers), free: make(chan []byte, teeBuffers), done: make(chan struct{})}
	for range teeBuffers {
		t.free <- make([]byte, 0, teeChunk)
	}
	go func() {
		defer close(t.done)
		for b := range t.full {
			h.Write(b)
			t.free <- b[:0]
		}
	}()
	return t
}

func (t *hashTee) write(b []byte) {
	for len(b) > 0 {
		buf := <-t.free
		n := min(len(b), cap(buf))
		t.full <- append(buf, b[:n]...)
		b = b[n:]
	}
}

func (t *hashTee) close() {
	close(t.full)
	<-t.done
}
