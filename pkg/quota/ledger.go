package quota

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// LabelLedger marks ledger ConfigMaps; its value is the org.
const LabelLedger = "berth.dev/quota-ledger"

// DataKey is the ConfigMap key that holds a ledger's entries, a line each:
// "uid class gpus admitted-unix-seconds", sorted by UID. One key for the
// whole list, not one per Pod, keeps the API server's work per write flat.
const DataKey = "entries"

// MaxEntries is the most Pods one org can have charged at once: workspaces
// and Pods with GPUs (builds and inference Pods without GPUs are never
// entries). At the longest line (64 bytes) the ledger stays under the API
// server's 1 MiB limit on a ConfigMap.
const MaxEntries = 15000

// Name is the ConfigMap name of an org's ledger.
func Name(org string) string { return "berth-quota-" + org }

// Client is what the ledger needs of the API server. It must read from the
// API server, not a cache: a write lost to a newer one is decided again on
// the latest ledger.
type Client interface {
	Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error
	Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error
	Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error
}

// Options tune a Ledger. The zero value is usable.
type Options struct {
	// MaxAttempts bounds the read-decide-write rounds of one change
	// (default 50).
	MaxAttempts int
	// OnConflict, when set, is called for every write lost to another
	// writer.
	OnConflict func()
	// OnWrite, when set, is called after every write of Reserve with the
	// number of reservations it decided and the write's duration.
	OnWrite func(batch int, took time.Duration)
	// Cache, when set, is a watch of the ledger ConfigMaps. A change then
	// starts from the newer of the cache's copy and the one this Ledger
	// last wrote, with no read of the API server; only a write lost to a
	// newer ledger reads it. The result is as exact as without: every write
	// is conditioned on the version it started from.
	Cache client.Reader
}

// Ledger keeps one ConfigMap per org in namespace, listing the Pods charged
// against the org's limits, by Pod UID.
//
// Reservations that arrive while a write for the same org is in flight are
// decided together and committed in the next write (a group commit): one
// replica's throughput is bounded by the batch, not by one write per Pod,
// and replicas contend only with each other.
type Ledger struct {
	client    Client
	namespace string
	clock     clock.PassiveClock
	opts      Options

	mu      sync.Mutex
	pending map[string][]*reservation    // by org; present while its committer runs
	written map[string]*corev1.ConfigMap // by org: the ledger as this Ledger last wrote it
}

// NewLedger returns a Ledger of the ConfigMaps in namespace.
func NewLedger(c Client, namespace string, clk clock.PassiveClock, o Options) *Ledger {
	if o.MaxAttempts == 0 {
		o.MaxAttempts = 50
	}
	return &Ledger{client: c, namespace: namespace, clock: clk, opts: o}
}

// reservation is one Pod waiting for a ledger write.
type reservation struct {
	ctx   context.Context
	org   *berthv1alpha1.Organization
	uid   types.UID
	entry Entry
	done  chan error
}

// Reserve charges the Pod with uid to org if it fits, and fails with an
// *ExceededError if it does not. A UID already in the ledger is admitted
// again without a second charge (a retried or reinvoked admission).
func (l *Ledger) Reserve(ctx context.Context, org *berthv1alpha1.Organization, uid types.UID, e Entry) error {
	e.Admitted = l.clock.Now().Truncate(time.Second)
	r := &reservation{ctx: ctx, org: org, uid: uid, entry: e, done: make(chan error, 1)}
	l.mu.Lock()
	if l.pending == nil {
		l.pending = map[string][]*reservation{}
	}
	queue, running := l.pending[org.Name]
	l.pending[org.Name] = append(queue, r)
	l.mu.Unlock()
	if !running {
		go l.commitLoop(org.Name)
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("reserve quota of Organization %q: %w", org.Name, ctx.Err())
	}
}

// commitLoop commits an org's pending reservations, batch after batch, until
// none is left.
func (l *Ledger) commitLoop(org string) {
	for {
		l.mu.Lock()
		batch := l.pending[org]
		if len(batch) == 0 {
			delete(l.pending, org)
			l.mu.Unlock()
			return
		}
		l.pending[org] = nil
		l.mu.Unlock()
		l.commit(batch)
	}
}

// commit decides a batch in arrival order on the latest ledger and writes
// it once.
func (l *Ledger) commit(batch []*reservation) {
	last := batch[len(batch)-1]
	// The batch outlives no request: it ends with the newest one's deadline,
	// and decides on the newest read of the Organization.
	ctx, org := last.ctx, last.org
	results := make([]error, len(batch))
	start := l.clock.Now()
	err := l.update(ctx, org.Name, func(entries map[types.UID]Entry) bool {
		changed := false
		used := UsageOf(entries)
		for i, r := range batch {
			results[i] = nil
			if _, ok := entries[r.uid]; ok {
				continue
			}
			if results[i] = check(org, used, len(entries), r.entry); results[i] != nil {
				continue
			}
			entries[r.uid] = r.entry
			used = used.Add(r.entry)
			changed = true
		}
		return changed
	})
	if l.opts.OnWrite != nil {
		l.opts.OnWrite(len(batch), l.clock.Since(start))
	}
	for i, r := range batch {
		if err != nil && results[i] == nil {
			results[i] = err
		}
		r.done <- results[i]
	}
}

// Fits reports, without a write, whether the Pod with uid would be admitted
// now: nil, an *ExceededError, or the error reading the ledger. It serves
// dry runs.
func (l *Ledger) Fits(ctx context.Context, org *berthv1alpha1.Organization, uid types.UID, e Entry) error {
	_, entries, err := l.read(ctx, org.Name)
	if err != nil {
		return err
	}
	if _, ok := entries[uid]; ok {
		return nil
	}
	return check(org, UsageOf(entries), len(entries), e)
}

// Record adds entries to org's ledger without a quota check: live Pods the
// ledger lacks (admitted before the org had a limit), so that the limit
// counts them.
func (l *Ledger) Record(ctx context.Context, org string, add map[types.UID]Entry) error {
	return l.update(ctx, org, func(entries map[types.UID]Entry) bool {
		changed := false
		for uid, e := range add {
			if _, ok := entries[uid]; !ok {
				entries[uid] = e
				changed = true
			}
		}
		return changed
	})
}

// Release removes the Pods with uids from org's ledger.
func (l *Ledger) Release(ctx context.Context, org string, uids []types.UID) error {
	return l.update(ctx, org, func(entries map[types.UID]Entry) bool {
		n := len(entries)
		for _, uid := range uids {
			delete(entries, uid)
		}
		return len(entries) != n
	})
}

// Entries returns org's ledger entries by Pod UID.
func (l *Ledger) Entries(ctx context.Context, org string) (map[types.UID]Entry, error) {
	_, entries, err := l.read(ctx, org)
	return entries, err
}

// update is the one read-change-write of a ledger: it takes org's ledger,
// lets change edit its entries, and writes them back if change reports a
// change, conditioned on the version it took. A write lost to another
// writer is decided again on the newer ledger.
//
// The ledger taken first is the one this Ledger knows (see Options.Cache).
// A decision on it stands only if its write succeeds; a decision to change
// nothing is made again on a read of the API server, since the known ledger
// may lack the latest entries.
func (l *Ledger) update(ctx context.Context, org string, change func(map[types.UID]Entry) bool) error {
	live := false
	for range l.opts.MaxAttempts {
		var cm *corev1.ConfigMap
		if !live {
			cm = l.known(ctx, org)
		}
		var entries map[types.UID]Entry
		if cm != nil {
			entries = decode(cm.Data[DataKey])
		} else {
			var err error
			if cm, entries, err = l.read(ctx, org); err != nil {
				return err
			}
			live = true
		}
		if !change(entries) {
			if live {
				return nil
			}
			live = true
			continue
		}
		cm, err := l.write(ctx, org, cm, entries)
		l.remember(org, cm, err)
		// NotFound: the ledger this Ledger knew was deleted since.
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) && !apierrors.IsNotFound(err) {
			if err != nil {
				return fmt.Errorf("write quota ledger of Organization %q: %w", org, err)
			}
			return nil
		}
		if l.opts.OnConflict != nil {
			l.opts.OnConflict()
		}
		live = true
	}
	return fmt.Errorf("quota ledger of Organization %q is too contended: %d writes lost to other replicas; retry the request", org, l.opts.MaxAttempts)
}

// remember keeps the ledger as this Ledger wrote it, and forgets it when the
// write failed.
func (l *Ledger) remember(org string, written *corev1.ConfigMap, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.written == nil {
		l.written = map[string]*corev1.ConfigMap{}
	}
	if err != nil {
		delete(l.written, org)
		return
	}
	l.written[org] = written
}

// known returns the newest of org's ledger that this Ledger has without
// asking the API server: the cache's copy or the one it last wrote. It
// returns nil without a cache, when it has neither, or when it cannot tell
// which is newer.
func (l *Ledger) known(ctx context.Context, org string) *corev1.ConfigMap {
	if l.opts.Cache == nil {
		return nil
	}
	l.mu.Lock()
	newest := l.written[org]
	l.mu.Unlock()
	cached := &corev1.ConfigMap{}
	if err := l.opts.Cache.Get(ctx, client.ObjectKey{Namespace: l.namespace, Name: Name(org)}, cached); err == nil {
		if newest == nil {
			return cached
		}
		newer, err := resourceversion.CompareResourceVersion(cached.ResourceVersion, newest.ResourceVersion)
		if err != nil {
			return nil
		}
		if newer > 0 {
			return cached
		}
	}
	if newest == nil {
		return nil
	}
	return newest.DeepCopy()
}

// read returns org's ledger ConfigMap (nil when there is none yet) and its
// entries.
func (l *Ledger) read(ctx context.Context, org string) (*corev1.ConfigMap, map[types.UID]Entry, error) {
	cm := &corev1.ConfigMap{}
	err := l.client.Get(ctx, client.ObjectKey{Namespace: l.namespace, Name: Name(org)}, cm)
	if apierrors.IsNotFound(err) {
		return nil, map[types.UID]Entry{}, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read quota ledger of Organization %q: %w", org, err)
	}
	return cm, decode(cm.Data[DataKey]), nil
}

// write stores entries, conditioned on cm's resourceVersion, or on the
// ledger not existing yet when cm is nil, and returns the ledger written.
func (l *Ledger) write(ctx context.Context, org string, cm *corev1.ConfigMap, entries map[types.UID]Entry) (*corev1.ConfigMap, error) {
	if cm == nil {
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: l.namespace, Name: Name(org), Labels: map[string]string{LabelLedger: org}},
			Data:       map[string]string{DataKey: encode(entries)},
		}
		return cm, l.client.Create(ctx, cm)
	}
	cm.Data = map[string]string{DataKey: encode(entries)}
	return cm, l.client.Update(ctx, cm) // carries resourceVersion: Conflict if stale
}

func encode(entries map[types.UID]Entry) string {
	var sb strings.Builder
	sb.Grow(len(entries) * 60)
	for _, uid := range slices.Sorted(maps.Keys(entries)) {
		e := entries[uid]
		fmt.Fprintf(&sb, "%s %s %d %d\n", uid, e.Class, e.GPUs, e.Admitted.Unix())
	}
	return sb.String()
}

// decode reads a ledger's entries; a line it cannot read is dropped, and
// gone at the next write. A line of the earlier, name-keyed format
// ("namespace_name uid class gpus admitted-unix-nanos") is read by its UID,
// so that an upgrade keeps every charge.
func decode(data string) map[types.UID]Entry {
	entries := make(map[types.UID]Entry, strings.Count(data, "\n"))
	for line := range strings.Lines(data) {
		f := strings.Fields(line)
		nanos := len(f) == 5
		if nanos {
			f = f[1:]
		}
		if len(f) != 4 {
			continue
		}
		gpus, err1 := strconv.ParseInt(f[2], 10, 64)
		n, err2 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil || gpus < 0 {
			continue
		}
		admitted := time.Unix(n, 0).UTC()
		if nanos {
			admitted = time.Unix(0, n).UTC().Truncate(time.Second)
		}
		entries[types.UID(f[0])] = Entry{Class: berthv1alpha1.Class(f[1]), GPUs: gpus, Admitted: admitted}
	}
	return entries
}
