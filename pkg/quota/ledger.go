package quota

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
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
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// LabelLedger marks ledger ConfigMaps; its value is the org.
const LabelLedger = "berth.dev/quota-ledger"

// Entry is one admitted Pod's charge.
type Entry struct {
	UID      types.UID
	Class    berthv1alpha1.Class
	GPUs     int64
	Admitted time.Time
	// Namespace and Name are the Pod's, read from the ledger key.
	Namespace string
	Name      string
}

// encode writes an entry as "uid class gpus admitted-unix-nanos": ledgers are
// rewritten whole on every change, so entries are kept short.
func encode(e Entry) string {
	return fmt.Sprintf("%s %s %d %d", e.UID, e.Class, e.GPUs, e.Admitted.UnixNano())
}

func decode(s string) (Entry, error) {
	f := strings.Fields(s)
	if len(f) != 4 {
		return Entry{}, fmt.Errorf("ledger entry %q has %d fields, want 4", s, len(f))
	}
	gpus, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return Entry{}, err
	}
	nanos, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		return Entry{}, err
	}
	return Entry{UID: types.UID(f[0]), Class: berthv1alpha1.Class(f[1]), GPUs: gpus, Admitted: time.Unix(0, nanos).UTC()}, nil
}

// Key is the ledger key of a Pod: namespace and name, which a namespace name
// (a DNS label) keeps unambiguous.
func Key(namespace, name string) string { return namespace + "_" + name }

// tokenMark starts the name part of a token key: no Pod name holds it.
const tokenMark = "+"

// TokenKey is the ledger key of a Pod admitted under a hold, by the token in
// its LabelQuotaToken.
func TokenKey(namespace, token string) string { return Key(namespace, tokenMark+token) }

// Token returns the token of an entry keyed by TokenKey.
func (e Entry) Token() (string, bool) { return strings.CutPrefix(e.Name, tokenMark) }

// NewToken returns a new random quota token: 16 characters, a valid label
// value.
func NewToken() string {
	var b [10]byte
	_, _ = rand.Read(b[:]) // never fails on Linux, see crypto/rand
	return strings.ToLower(base32.StdEncoding.EncodeToString(b[:]))
}

// SplitKey is the inverse of Key.
func SplitKey(key string) (namespace, name string) {
	namespace, name, _ = strings.Cut(key, "_")
	return namespace, name
}

// Usage is what an org's admitted Pods hold.
type Usage struct {
	Workspaces int64
	GPUs       int64
}

// UsageOf adds up entries.
func UsageOf(entries map[string]Entry) Usage {
	var u Usage
	for _, e := range entries {
		if e.Class == berthv1alpha1.ClassWorkspace {
			u.Workspaces++
		}
		u.GPUs += e.GPUs
	}
	return u
}

// ExceededError is a quota denial. Its message names the limit, the usage
// and the fix.
type ExceededError struct {
	Field   string // maxWorkspaces or maxGPUs
	Org     string
	Limit   int64
	Used    int64
	Request int64
}

func (e *ExceededError) Error() string {
	if e.Field == "maxGPUs" {
		return fmt.Sprintf("Organization %q has %d of its %d GPUs (spec.maxGPUs) in use and this Pod asks for %d more; stop an inference or workspace Pod, or ask the platform team to raise spec.maxGPUs",
			e.Org, e.Used, e.Limit, e.Request)
	}
	return fmt.Sprintf("Organization %q already runs %d of its %d workspaces (spec.maxWorkspaces); stop one of them (kubectl delete pod) or ask the platform team to raise spec.maxWorkspaces",
		e.Org, e.Used, e.Limit)
}

// Check decides whether entry fits next to the entries already admitted.
func Check(org *berthv1alpha1.Organization, entries map[string]Entry, entry Entry) error {
	return checkUsage(org, UsageOf(entries), entry)
}

func checkUsage(org *berthv1alpha1.Organization, u Usage, entry Entry) error {
	if entry.Class == berthv1alpha1.ClassWorkspace && org.Spec.MaxWorkspaces != nil && u.Workspaces+1 > int64(*org.Spec.MaxWorkspaces) {
		return &ExceededError{Field: "maxWorkspaces", Org: org.Name, Limit: int64(*org.Spec.MaxWorkspaces), Used: u.Workspaces, Request: 1}
	}
	if entry.GPUs > 0 && org.Spec.MaxGPUs != nil && u.GPUs+entry.GPUs > int64(*org.Spec.MaxGPUs) {
		return &ExceededError{Field: "maxGPUs", Org: org.Name, Limit: int64(*org.Spec.MaxGPUs), Used: u.GPUs, Request: entry.GPUs}
	}
	return nil
}

// Charged reports whether a Pod of this class and GPUs is counted at all.
func Charged(class berthv1alpha1.Class, gpus int64) bool {
	return class == berthv1alpha1.ClassWorkspace || gpus > 0
}

// Limited reports whether org caps something a Pod of this class and GPUs
// holds. Only such Pods go through the ledger; the others are admitted with
// no write.
func Limited(org *berthv1alpha1.Organization, class berthv1alpha1.Class, gpus int64) bool {
	return (class == berthv1alpha1.ClassWorkspace && org.Spec.MaxWorkspaces != nil) ||
		(gpus > 0 && org.Spec.MaxGPUs != nil)
}

// Ledger reads and writes ledgers. Its client must read from the API server,
// not a cache: the decision must see the latest version.
//
// Reservations made at once in one process for one org are decided together
// and committed in one write (a group commit), so a replica's throughput is
// bounded by the batch, not by one write per Pod, and replicas contend only
// with each other.
type Ledger struct {
	Client    client.Client
	Namespace string
	// MaxAttempts bounds the read-decide-write rounds of one commit.
	MaxAttempts int
	// OnConflict, when set, is called for every write lost to another
	// replica.
	OnConflict func()
	// OnWrite, when set, is called after every ledger write of Reserve with
	// the batch it committed and the write's duration.
	OnWrite func(batch int, took time.Duration)
	// Replica names this process's holds in ledgers; it must be unique per
	// process. Holds are taken only once Start runs.
	Replica string
	// HoldSize is how many workspace slots a hold takes (default 32).
	HoldSize int64
	// HoldTTL is how long a hold lasts unless renewed (default 10 s).
	HoldTTL time.Duration
	// HoldIdle is how long an unused hold is kept (default 30 s); it is
	// returned at once when the org nears its limit.
	HoldIdle time.Duration

	mu      sync.Mutex
	pending map[string][]*reservation    // by org; present while a committer runs
	last    map[string]*corev1.ConfigMap // by org: the ledger as this process last wrote it
	holds   map[string]*held             // by org: this process's holds
	started bool
}

// reservation is one Pod waiting for a ledger write, or, with an empty key,
// a request to write this process's hold (flush, renew or return it).
type reservation struct {
	ctx   context.Context
	org   *berthv1alpha1.Organization
	key   string
	entry Entry
	done  chan error
}

func (r *reservation) flush() bool { return r.key == "" }

// Name is the ConfigMap name of an org's ledger.
func Name(org string) string { return "berth-quota-" + org }

// Reserve admits entry into org's ledger under key if it fits, and fails
// with an *ExceededError if it does not. A key already in the ledger with
// the same UID is admitted again without a second charge.
func (l *Ledger) Reserve(ctx context.Context, org *berthv1alpha1.Organization, key string, entry Entry) error {
	if l.takeHeld(org, key, entry) {
		return nil
	}
	r := &reservation{ctx: ctx, org: org, key: key, entry: entry, done: make(chan error, 1)}
	l.enqueue(r)
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("reserve quota of Organization %q: %w", org.Name, ctx.Err())
	}
}

func (l *Ledger) enqueue(r *reservation) {
	l.mu.Lock()
	if l.pending == nil {
		l.pending = map[string][]*reservation{}
	}
	queue, running := l.pending[r.org.Name]
	l.pending[r.org.Name] = append(queue, r)
	l.mu.Unlock()
	if !running {
		go l.commitLoop(r.org.Name)
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
		l.pending[org] = batch[:0:0]
		l.mu.Unlock()
		l.commit(batch)
	}
}

// commit decides a batch in arrival order against the latest ledger and
// writes it once; a write lost to another replica is decided again.
func (l *Ledger) commit(batch []*reservation) {
	last := batch[len(batch)-1]
	// The batch outlives no request: it ends with the last one's deadline.
	ctx := last.ctx
	org := last.org // the newest read of the spec
	attempts := l.MaxAttempts
	if attempts == 0 {
		attempts = 50
	}
	results := make([]error, len(batch))
	take := slices.ContainsFunc(batch, func(r *reservation) bool { return r.flush() || holdable(org, r.entry) })
	begun := time.Now()
	finish := func() {
		if slices.ContainsFunc(batch, (*reservation).flush) {
			l.kickDone(org.Name)
		}
		for i, r := range batch {
			r.done <- results[i]
		}
	}
	defer finish()
	for range attempts {
		// Decide on the ledger as last written here, if any: the write is
		// conditioned on its version, so a stale copy costs a conflict and a
		// read, never a wrong decision.
		cm, b, err := l.cached(org.Name)
		fromCache := cm != nil
		if !fromCache {
			cm, b, err = l.read(ctx, org.Name)
		}
		if err != nil {
			fill(results, err)
			return
		}
		plan := l.planHold(org, b, take)
		changed := plan.changed
		held := false // a denial that other replicas' holds alone cause
		for i, r := range batch {
			results[i] = nil
			if r.flush() {
				continue
			}
			if prev, ok := b.entries[r.key]; ok && prev.UID == r.entry.UID {
				continue
			}
			old, had := b.entries[r.key]
			delete(b.entries, r.key) // a stale entry of an earlier Pod of that name
			if err := checkUsage(org, b.usage(), r.entry); err != nil {
				if had {
					b.entries[r.key] = old
				}
				results[i] = err
				held = held || checkUsage(org, b.withoutHoldsBut(l.Replica), r.entry) == nil
				continue
			}
			b.entries[r.key] = r.entry
			changed = true
		}
		if fromCache && slices.ContainsFunc(results, func(err error) bool { return err != nil }) {
			// A denial must stand on the latest ledger: another writer
			// (a release) may have made room since this process wrote.
			l.forget(org.Name)
			continue
		}
		if held && time.Since(begun) < holdWait {
			// Other replicas return holds that stand in the way of the
			// org's last workspaces within a tick: wait for them.
			l.forget(org.Name)
			time.Sleep(holdWait / 10)
			continue
		}
		changed = l.topUp(org, b, &plan) || changed
		if !changed {
			return
		}
		start := time.Now()
		err = l.write(ctx, org.Name, cm, b)
		if l.OnWrite != nil {
			l.OnWrite(len(batch), time.Since(start))
		}
		if isConflict(err) {
			l.forget(org.Name)
			if l.OnConflict != nil {
				l.OnConflict()
			}
			continue // another writer came first: decide again on its write
		}
		l.settleHold(org, plan, err)
		if err != nil {
			l.forget(org.Name)
			fill(results, fmt.Errorf("write quota ledger of Organization %q: %w", org.Name, err))
		}
		return
	}
	l.settleHold(org, holdPlan{}, errRetry)
	fill(results, fmt.Errorf("quota ledger of Organization %q is too contended: %d attempts lost; retry the request", org.Name, attempts))
}

// errRetry stands for a write not made: the hold's outcome is unsettled.
var errRetry = errors.New("not written")

// isConflict reports a write lost to another writer.
func isConflict(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
}

func fill(results []error, err error) {
	for i := range results {
		if results[i] == nil {
			results[i] = err
		}
	}
}

// Record adds entries to org's ledger without a quota check: the live Pods
// admitted before the org had a limit, so that the limit counts them.
func (l *Ledger) Record(ctx context.Context, org string, add map[string]Entry) error {
	for {
		cm, b, err := l.read(ctx, org)
		if err != nil {
			return err
		}
		changed := false
		for k, e := range add {
			if _, ok := b.entries[k]; !ok {
				b.entries[k] = e
				changed = true
			}
		}
		if !changed {
			return nil
		}
		err = l.write(ctx, org, cm, b)
		if !isConflict(err) {
			return err
		}
		l.forget(org)
	}
}

// Release removes keys from org's ledger. An entry is removed only if its
// UID is the one given (an empty UID matches any), so a new Pod of the same
// name keeps its charge.
func (l *Ledger) Release(ctx context.Context, org string, keys map[string]types.UID) error {
	for {
		cm, b, err := l.read(ctx, org)
		if err != nil || cm == nil {
			return err
		}
		changed := false
		for k, uid := range keys {
			if e, ok := b.entries[k]; ok && (uid == "" || e.UID == uid) {
				delete(b.entries, k)
				changed = true
			}
		}
		if !changed {
			return nil
		}
		err = l.write(ctx, org, cm, b)
		if !apierrors.IsConflict(err) {
			return err
		}
		l.forget(org)
	}
}

// Entries returns org's ledger entries.
func (l *Ledger) Entries(ctx context.Context, org string) (map[string]Entry, error) {
	_, b, err := l.read(ctx, org)
	return b.entries, err
}

// Read returns org's ledger entries and holds.
func (l *Ledger) Read(ctx context.Context, org string) (map[string]Entry, map[string]Hold, error) {
	_, b, err := l.read(ctx, org)
	return b.entries, b.holds, err
}

// Fits reports, without a write, whether entry would be admitted now: nil,
// an *ExceededError, or the error reading the ledger. It serves dry runs.
func (l *Ledger) Fits(ctx context.Context, org *berthv1alpha1.Organization, key string, entry Entry) error {
	_, b, err := l.read(ctx, org.Name)
	if err != nil {
		return err
	}
	if prev, ok := b.entries[key]; ok && prev.UID == entry.UID {
		return nil
	}
	delete(b.entries, key)
	return checkUsage(org, b.usage(), entry)
}

func (l *Ledger) read(ctx context.Context, org string) (*corev1.ConfigMap, book, error) {
	cm := &corev1.ConfigMap{}
	err := l.Client.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: Name(org)}, cm)
	if apierrors.IsNotFound(err) {
		return nil, book{entries: map[string]Entry{}, holds: map[string]Hold{}}, nil
	}
	if err != nil {
		return nil, book{}, fmt.Errorf("read quota ledger of Organization %q: %w", org, err)
	}
	return cm, decodeAll(cm), nil
}

// The ConfigMap keys of a ledger. Entries are a line per Pod, "key uid class
// gpus admitted-unix-nanos"; holds a line per replica, "replica workspaces
// expires-unix-nanos"; both sorted. A key per list, not per Pod, keeps the
// API server's field tracking and key validation of every write constant.
const (
	DataKey  = "entries"
	HoldsKey = "holds"
)

// book is a ledger decoded.
type book struct {
	entries map[string]Entry
	holds   map[string]Hold
}

// usage adds up entries and holds.
func (b book) usage() Usage {
	u := UsageOf(b.entries)
	for _, h := range b.holds {
		u.Workspaces += h.Workspaces
	}
	return u
}

// withoutHoldsBut adds up entries and replica's hold only.
func (b book) withoutHoldsBut(replica string) Usage {
	u := UsageOf(b.entries)
	u.Workspaces += b.holds[replica].Workspaces
	return u
}

func decodeAll(cm *corev1.ConfigMap) book {
	lines := strings.Split(cm.Data[DataKey], "\n")
	b := book{entries: make(map[string]Entry, len(lines)), holds: map[string]Hold{}}
	for _, line := range lines {
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		e, err := decode(v)
		if err != nil {
			continue // unreadable entries are dropped at the next write
		}
		e.Namespace, e.Name = SplitKey(k)
		b.entries[k] = e
	}
	for _, line := range strings.Split(cm.Data[HoldsKey], "\n") {
		if replica, h, ok := decodeHold(line); ok {
			b.holds[replica] = h
		}
	}
	return b
}

func encodeAll(b book) map[string]string {
	var sb strings.Builder
	for _, k := range slices.Sorted(maps.Keys(b.entries)) {
		sb.WriteString(k)
		sb.WriteByte(' ')
		sb.WriteString(encode(b.entries[k]))
		sb.WriteByte('\n')
	}
	data := map[string]string{DataKey: sb.String()}
	if len(b.holds) > 0 {
		var hb strings.Builder
		for _, r := range slices.Sorted(maps.Keys(b.holds)) {
			hb.WriteString(encodeHold(r, b.holds[r]))
			hb.WriteByte('\n')
		}
		data[HoldsKey] = hb.String()
	}
	return data
}

// write stores entries, conditioned on cm's resourceVersion (or on cm not
// existing yet).
func (l *Ledger) write(ctx context.Context, org string, cm *corev1.ConfigMap, b book) error {
	data := encodeAll(b)
	var err error
	if cm == nil {
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Namespace: l.Namespace, Name: Name(org), Labels: map[string]string{LabelLedger: org},
		}, Data: data}
		err = l.Client.Create(ctx, cm)
	} else {
		cm = cm.DeepCopy()
		cm.Data = data
		err = l.Client.Update(ctx, cm) // carries resourceVersion: fails with Conflict if stale
	}
	if err == nil {
		l.mu.Lock()
		if l.last == nil {
			l.last = map[string]*corev1.ConfigMap{}
		}
		l.last[org] = cm
		l.mu.Unlock()
	}
	return err
}

// cached returns the ledger as this process last wrote it, or nil.
func (l *Ledger) cached(org string) (*corev1.ConfigMap, book, error) {
	l.mu.Lock()
	cm := l.last[org]
	l.mu.Unlock()
	if cm == nil {
		return nil, book{}, nil
	}
	return cm, decodeAll(cm), nil
}

func (l *Ledger) forget(org string) {
	l.mu.Lock()
	delete(l.last, org)
	l.mu.Unlock()
}
