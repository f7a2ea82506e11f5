package quota

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
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
	UID       types.UID           `json:"uid"`
	Class     berthv1alpha1.Class `json:"class"`
	GPUs      int64               `json:"gpus,omitempty"`
	Admitted  time.Time           `json:"admitted"`
	Namespace string              `json:"-"`
	Name      string              `json:"-"`
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

// Ledger reads and writes ledgers. Its client must read from the API server,
// not a cache: the decision must see the latest version.
type Ledger struct {
	Client    client.Client
	Namespace string
	// MaxAttempts bounds the read-decide-write rounds of one Reserve.
	MaxAttempts int
	// OnConflict, when set, is called for every write lost to another
	// replica.
	OnConflict func()
}

// Name is the ConfigMap name of an org's ledger.
func Name(org string) string { return "berth-quota-" + org }

// Reserve admits entry into org's ledger under key if it fits, and fails
// with an *ExceededError if it does not. A key already in the ledger with
// the same UID is admitted again without a second charge.
func (l *Ledger) Reserve(ctx context.Context, org *berthv1alpha1.Organization, key string, entry Entry) error {
	attempts := l.MaxAttempts
	if attempts == 0 {
		attempts = 50
	}
	for range attempts {
		cm, entries, err := l.read(ctx, org.Name)
		if err != nil {
			return err
		}
		if prev, ok := entries[key]; ok && prev.UID == entry.UID {
			return nil
		}
		delete(entries, key) // a stale entry of an earlier Pod of that name
		if err := Check(org, entries, entry); err != nil {
			return err
		}
		entries[key] = entry
		err = l.write(ctx, org.Name, cm, entries)
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			if l.OnConflict != nil {
				l.OnConflict()
			}
			continue // another replica wrote first: decide again on its write
		}
		return err
	}
	return fmt.Errorf("quota ledger of Organization %q is too contended: %d attempts lost; retry the request", org.Name, attempts)
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
	entries := make(map[string]Entry, len(cm.Data))
	for k, v := range cm.Data {
		var e Entry
		if err := json.Unmarshal([]byte(v), &e); err != nil {
			continue // unreadable entries are dropped at the next write
		}
		e.Namespace, e.Name = SplitKey(k)
		entries[k] = e
	}
	return cm, entries, nil
}

// write stores entries, conditioned on cm's resourceVersion (or on cm not
// existing yet).
func (l *Ledger) write(ctx context.Context, org string, cm *corev1.ConfigMap, entries map[string]Entry) error {
	data := make(map[string]string, len(entries))
	for k, e := range entries {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		data[k] = string(b)
	}
	if cm == nil {
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Namespace: l.Namespace, Name: Name(org), Labels: map[string]string{LabelLedger: org},
		}, Data: data}
		return l.Client.Create(ctx, cm)
	}
	cm.Data = data
	return l.Client.Update(ctx, cm) // carries resourceVersion: fails with Conflict if stale
}
