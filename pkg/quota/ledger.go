package quota

import (
	"context"
	"fmt"
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
	u := UsageOf(entries)
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

	mu      sync.Mutex
	pending map[string][]*reservation    // by org; present while a committer runs
	last    map[string]*corev1.ConfigMap // by org: the ledger as this process last wrote it
}

type reservation struct {
	ctx   context.Context
	org   *berthv1alpha1.Organization
	key   string
	entry Entry
	done  chan error
}

// Name is the ConfigMap name of an org's ledger.
func Name(org string) string { return "berth-quota-" + org }

// Reserve admits entry into org's ledger under key if it fits, and fails
// with an *ExceededError if it does not. A key already in the ledger with
// the same UID is admitted again without a second charge.
func (l *Ledger) Reserve(ctx context.Context, org *berthv1alpha1.Organization, key string, entry Entry) error {
	r := &reservation{ctx: ctx, org: org, key: key, entry: entry, done: make(chan error, 1)}
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
	finish := func() {
		for i, r := range batch {
			r.done <- results[i]
		}
	}
	defer finish()
	for range attempts {
		// Decide on the ledger as last written here, if any: the write is
		// conditioned on its version, so a stale copy costs a conflict and a
		// read, never a wrong decision.
		cm, entries, err := l.cached(org.Name)
		fromCache := cm != nil
		if !fromCache {
			cm, entries, err = l.read(ctx, org.Name)
		}
		if err != nil {
			fill(results, err)
			return
		}
		changed := false
		for i, r := range batch {
			results[i] = nil
			if prev, ok := entries[r.key]; ok && prev.UID == r.entry.UID {
				continue
			}
			old, had := entries[r.key]
			delete(entries, r.key) // a stale entry of an earlier Pod of that name
			if err := Check(org, entries, r.entry); err != nil {
				if had {
					entries[r.key] = old
				}
				results[i] = err
				continue
			}
			entries[r.key] = r.entry
			changed = true
		}
		if fromCache && slices.ContainsFunc(results, func(err error) bool { return err != nil }) {
			// A denial must stand on the latest ledger: another writer
			// (a release) may have made room since this process wrote.
			l.forget(org.Name)
			continue
		}
		if !changed {
			return
		}
		err = l.write(ctx, org.Name, cm, entries)
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			l.forget(org.Name)
			if l.OnConflict != nil {
				l.OnConflict()
			}
			continue // another writer came first: decide again on its write
		}
		if err != nil {
			l.forget(org.Name)
			fill(results, fmt.Errorf("write quota ledger of Organization %q: %w", org.Name, err))
		}
		return
	}
	fill(results, fmt.Errorf("quota ledger of Organization %q is too contended: %d attempts lost; retry the request", org.Name, attempts))
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
		cm, entries, err := l.read(ctx, org)
		if err != nil {
			return err
		}
		changed := false
		for k, e := range add {
			if _, ok := entries[k]; !ok {
				entries[k] = e
				changed = true
			}
		}
		if !changed {
			return nil
		}
		err = l.write(ctx, org, cm, entries)
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
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
		cm, entries, err := l.read(ctx, org)
		if err != nil || cm == nil {
			return err
		}
		changed := false
		for k, uid := range keys {
			if e, ok := entries[k]; ok && (uid == "" || e.UID == uid) {
				delete(entries, k)
				changed = true
			}
		}
		if !changed {
			return nil
		}
		err = l.write(ctx, org, cm, entries)
		if !apierrors.IsConflict(err) {
			return err
		}
		l.forget(org)
	}
}

// Entries returns org's ledger.
func (l *Ledger) Entries(ctx context.Context, org string) (map[string]Entry, error) {
	_, entries, err := l.read(ctx, org)
	return entries, err
}

func (l *Ledger) read(ctx context.Context, org string) (*corev1.ConfigMap, map[string]Entry, error) {
	cm := &corev1.ConfigMap{}
	err := l.Client.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: Name(org)}, cm)
	if apierrors.IsNotFound(err) {
		return nil, map[string]Entry{}, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read quota ledger of Organization %q: %w", org, err)
	}
	return cm, decodeAll(cm), nil
}

func decodeAll(cm *corev1.ConfigMap) map[string]Entry {
	entries := make(map[string]Entry, len(cm.Data))
	for k, v := range cm.Data {
		e, err := decode(v)
		if err != nil {
			continue // unreadable entries are dropped at the next write
		}
		e.Namespace, e.Name = SplitKey(k)
		entries[k] = e
	}
	return entries
}

// write stores entries, conditioned on cm's resourceVersion (or on cm not
// existing yet).
func (l *Ledger) write(ctx context.Context, org string, cm *corev1.ConfigMap, entries map[string]Entry) error {
	data := make(map[string]string, len(entries))
	for k, e := range entries {
		data[k] = encode(e)
	}
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
func (l *Ledger) cached(org string) (*corev1.ConfigMap, map[string]Entry, error) {
	l.mu.Lock()
	cm := l.last[org]
	l.mu.Unlock()
	if cm == nil {
		return nil, nil, nil
	}
	return cm, decodeAll(cm), nil
}

func (l *Ledger) forget(org string) {
	l.mu.Lock()
	delete(l.last, org)
	l.mu.Unlock()
}
