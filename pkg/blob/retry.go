package blob

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
)

// Backoff says how often and how patiently a transfer is retried.
type Backoff struct {
	// Attempts is the number of tries, the first included; at least 1.
	Attempts int
	// Initial is the wait after the first failure; it doubles after each.
	Initial time.Duration
	// Max caps the wait.
	Max time.Duration
}

// DefaultBackoff gives a transfer 5 tries over about 30 s.
func DefaultBackoff() Backoff {
	return Backoff{Attempts: 5, Initial: 2 * time.Second, Max: 15 * time.Second}
}

// permanentError is an error no retry can fix, such as a missing blob or an
// unsafe archive.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that retrying cannot fix.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err was marked Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// Do runs f until it succeeds, fails permanently, ctx ends or the attempts
// run out. what names the operation in logs and in the returned error.
func (b Backoff) Do(ctx context.Context, what string, f func(ctx context.Context) error) error {
	log := logr.FromContextOrDiscard(ctx)
	attempts := max(b.Attempts, 1)
	wait := b.Initial
	var err error
	for i := 1; ; i++ {
		if err = f(ctx); err == nil || IsPermanent(err) {
			return err
		}
		if i >= attempts {
			return fmt.Errorf("%s: giving up after %d attempts: %w", what, attempts, err)
		}
		log.Info("transfer failed, retrying", "operation", what, "attempt", i, "of", attempts, "wait", wait.String(), "error", err.Error())
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %w)", what, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(wait*2, max(b.Max, b.Initial))
	}
}
