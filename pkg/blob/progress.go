package blob

import (
	"context"
	"io"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// DefaultProgressInterval is how often a long transfer logs its progress.
const DefaultProgressInterval = 10 * time.Second

// progress counts the bytes of one transfer and logs them at a steady rate
// until stopped.
type progress struct {
	n    atomic.Int64
	done chan struct{}
	stop func()
}

// startProgress logs "transfer progress" for op and name every interval
// (never when interval <= 0) until the returned progress is finished.
func startProgress(ctx context.Context, op, name string, total int64, interval time.Duration) *progress {
	p := &progress{done: make(chan struct{})}
	start := time.Now()
	if interval <= 0 {
		p.stop = func() {}
		return p
	}
	log := logr.FromContextOrDiscard(ctx)
	t := time.NewTicker(interval)
	go func() {
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				n := p.n.Load()
				secs := time.Since(start).Seconds()
				kv := []any{"operation", op, "blob", name, "bytes", n, "mbps", mbps(n, secs)}
				if total > 0 {
					kv = append(kv, "total", total, "percent", int(100*n/total))
				}
				log.Info("transfer progress", kv...)
			}
		}
	}()
	var once atomic.Bool
	p.stop = func() {
		if once.CompareAndSwap(false, true) {
			close(p.done)
		}
	}
	return p
}

func (p *progress) add(n int) { p.n.Add(int64(n)) }

func (p *progress) finish() { p.stop() }

// mbps is a rate in MB/s (10^6 bytes), rounded to 0.1.
func mbps(n int64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(int64(float64(n)/secs/1e5)) / 10
}

// countingReader counts what passes through it into a progress.
type countingReader struct {
	r io.Reader
	p *progress
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.add(n)
	return n, err
}
