package quota

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// Hold is workspace slots one webhook replica has taken from an org's
// ledger, so that it admits workspaces without a ledger write each. The
// slots count as used for every other replica until the holder writes the
// Pods it admitted as entries, or returns the slots, or the hold expires.
type Hold struct {
	Workspaces int64
	Expires    time.Time
}

// The defaults of Ledger's hold settings.
const (
	DefaultHoldSize = 32
	DefaultHoldTTL  = 10 * time.Second
	// DefaultHoldIdle is how long an unused hold is kept, renewed, while
	// the org has room to spare.
	DefaultHoldIdle = 30 * time.Second
	// holdShare is the share of an org's free workspaces one hold may take:
	// an eighth, so that holds never stand between the last workspaces and
	// the Pods that want them.
	holdShare = 8
	// minHold is the smallest hold worth taking; below it (fewer than 32
	// free workspaces) every admission writes the ledger.
	minHold = 4
	// holdWait is how long a reservation that fits but for other replicas'
	// holds waits for them to shrink before it is denied.
	holdWait = 1500 * time.Millisecond
)

func encodeHold(replica string, h Hold) string {
	return fmt.Sprintf("%s %d %d", replica, h.Workspaces, h.Expires.UnixNano())
}

func decodeHold(line string) (string, Hold, bool) {
	f := strings.Fields(line)
	if len(f) != 3 {
		return "", Hold{}, false
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || n < 0 {
		return "", Hold{}, false
	}
	nanos, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return "", Hold{}, false
	}
	return f[0], Hold{Workspaces: n, Expires: time.Unix(0, nanos).UTC()}, true
}

// held is this process's hold in one org.
type held struct {
	// size is the hold's slots as last written; used never outgrows it.
	size int64
	// used are the Pods admitted under the hold and not yet written.
	used []pending
	// usable is when local admissions stop unless a write renews the hold:
	// half its TTL, far ahead of its expiry.
	usable  time.Time
	lastUse time.Time
	org     *berthv1alpha1.Organization
	// shrink asks the next write to return the hold.
	shrink bool
	// kicked: a write of the hold is queued or running; admissions under
	// it ask for no other until it ends.
	kicked bool
}

type pending struct {
	key   string
	entry Entry
}

// holdable reports whether entry may be admitted under a hold: a workspace
// without GPUs in an org that limits workspaces but not through GPUs.
func holdable(org *berthv1alpha1.Organization, entry Entry) bool {
	return entry.Class == berthv1alpha1.ClassWorkspace && entry.GPUs == 0 && org.Spec.MaxWorkspaces != nil
}

func (l *Ledger) holdSize() int64 {
	if l.HoldSize > 0 {
		return l.HoldSize
	}
	return DefaultHoldSize
}

func (l *Ledger) holdTTL() time.Duration {
	if l.HoldTTL > 0 {
		return l.HoldTTL
	}
	return DefaultHoldTTL
}

// takeHeld admits entry under this process's hold, if it has a usable one
// with a free slot. It writes nothing.
func (l *Ledger) takeHeld(org *berthv1alpha1.Organization, key string, entry Entry) bool {
	if !holdable(org, entry) {
		return false
	}
	now := time.Now()
	l.mu.Lock()
	h := l.holds[org.Name]
	if h == nil || !l.started || h.shrink || int64(len(h.used)) >= h.size || !now.Before(h.usable) {
		l.mu.Unlock()
		return false
	}
	for _, p := range h.used {
		if p.key == key && p.entry.UID == entry.UID {
			l.mu.Unlock()
			return true // admitted again, charged once
		}
	}
	h.used = append(h.used, pending{key: key, entry: entry})
	h.lastUse, h.org = now, org
	refill := !h.kicked && int64(len(h.used)) >= h.size/2
	h.kicked = h.kicked || refill
	l.mu.Unlock()
	if refill {
		l.kick(org)
	}
	return true
}

// AdmitHeld admits a workspace of namespace under this process's hold, if
// it has a usable one with a free slot, and returns the token the Pod must
// carry in LabelQuotaToken: its ledger key is TokenKey(namespace, token).
// It writes nothing, so it serves the mutating webhook, before the Pod has a
// name. Every call takes a new slot: a token in the request is never
// trusted.
func (l *Ledger) AdmitHeld(org *berthv1alpha1.Organization, namespace string, entry Entry) (string, bool) {
	if !holdable(org, entry) {
		return "", false
	}
	token := NewToken()
	entry.UID = types.UID(token)
	if !l.takeHeld(org, TokenKey(namespace, token), entry) {
		return "", false
	}
	return token, true
}

// kick asks the org's committer to write this process's hold: flush the
// Pods admitted under it, renew it, top it up or return it.
func (l *Ledger) kick(org *berthv1alpha1.Organization) {
	l.mu.Lock()
	for _, r := range l.pending[org.Name] {
		if r.flush() {
			l.mu.Unlock()
			return // one is queued already
		}
	}
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), l.holdTTL())
	r := &reservation{ctx: ctx, org: org, done: make(chan error, 1)}
	l.enqueue(r)
	go func() {
		defer cancel()
		select {
		case <-r.done:
		case <-ctx.Done():
		}
	}()
}

// kickDone ends a write of org's hold: the next admission past half the
// hold may ask for another.
func (l *Ledger) kickDone(org string) {
	l.mu.Lock()
	if h := l.holds[org]; h != nil {
		h.kicked = false
	}
	l.mu.Unlock()
}

// holdPlan is what one write does to this process's hold.
type holdPlan struct {
	// flushed is how many of the hold's used Pods the write adds as entries.
	flushed int
	// keep is the slots the write keeps for Pods admitted while it runs.
	keep int64
	// target is the hold the write leaves.
	target int64
	// take says the write may top the hold up.
	take    bool
	changed bool
}

// planHold prepares a write of org's ledger b: the Pods admitted under this
// process's hold become entries, and the hold keeps only the slots local
// admissions may still use while the write runs. take says whether the
// batch may start or top up a hold.
func (l *Ledger) planHold(org *berthv1alpha1.Organization, b book, take bool) holdPlan {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := holdPlan{take: take && l.started && l.Replica != "" && org.Spec.MaxWorkspaces != nil}
	h := l.holds[org.Name]
	if h == nil {
		if old, ok := b.holds[l.Replica]; ok && l.Replica != "" {
			// A write whose outcome was unknown left a hold this process
			// no longer counts on.
			delete(b.holds, l.Replica)
			p.changed = old.Workspaces > 0
		}
		return p
	}
	written, ok := b.holds[l.Replica]
	if !ok || h.shrink || !l.started || org.Spec.MaxWorkspaces != nil && free(org, b, l.Replica) < minHold*holdShare {
		// The hold is gone from the ledger, is to be returned, or stands
		// in the way of the org's last workspaces: stop admitting under it
		// and write what it admitted.
		h.size = int64(len(h.used))
		p.take = p.take && !h.shrink && ok
	}
	p.flushed = len(h.used)
	for _, u := range h.used {
		if prev, ok := b.entries[u.key]; !ok || prev.UID != u.entry.UID {
			b.entries[u.key] = u.entry
			p.changed = true
		}
	}
	p.keep = h.size - int64(p.flushed)
	p.target = p.keep
	if p.keep > 0 {
		b.holds[l.Replica] = Hold{Workspaces: p.keep, Expires: written.Expires}
	} else {
		delete(b.holds, l.Replica)
	}
	p.changed = p.changed || p.keep != written.Workspaces
	return p
}

// free is how many more workspaces org may run by b, not counting the
// hold of replica.
func free(org *berthv1alpha1.Organization, b book, replica string) int64 {
	return int64(*org.Spec.MaxWorkspaces) - b.usage().Workspaces + b.holds[replica].Workspaces
}

// topUp sets the hold this write leaves: topped up to its size when the org
// has room to spare, renewed otherwise. It reports whether the ledger
// changes.
func (l *Ledger) topUp(org *berthv1alpha1.Organization, b book, p *holdPlan) bool {
	if p.take {
		if want := min(l.holdSize(), free(org, b, l.Replica)/holdShare); want >= minHold && want > p.keep {
			p.target = want
		}
	}
	if p.target == 0 {
		return p.changed
	}
	b.holds[l.Replica] = Hold{Workspaces: p.target, Expires: time.Now().Add(l.holdTTL())}
	return true // a write with a hold renews it
}

// settleHold records the outcome of a write planned with p. After a failed
// or unknown write this process admits nothing more under the hold until a
// write succeeds: the ledger may hold either version.
func (l *Ledger) settleHold(org *berthv1alpha1.Organization, p holdPlan, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.holds[org.Name]
	if err != nil {
		if h != nil {
			h.size = int64(len(h.used))
		}
		return
	}
	if h == nil {
		if p.target == 0 {
			return
		}
		if l.holds == nil {
			l.holds = map[string]*held{}
		}
		h = &held{lastUse: time.Now()}
		l.holds[org.Name] = h
	}
	h.org = org
	h.used = h.used[p.flushed:]
	h.size = p.target
	h.shrink = false
	h.usable = time.Now().Add(l.holdTTL() / 2)
	if h.size == 0 && len(h.used) == 0 {
		delete(l.holds, org.Name)
	}
}

// NeedLeaderElection is false: every replica keeps its own holds.
func (l *Ledger) NeedLeaderElection() bool { return false }

// Start lets the ledger take holds, and keeps them until ctx ends (see
// tend). At the end it returns every hold.
func (l *Ledger) Start(ctx context.Context) error {
	if l.Replica == "" {
		return fmt.Errorf("quota ledger: holds need a replica name")
	}
	l.mu.Lock()
	l.started = true
	l.mu.Unlock()
	tick := time.NewTicker(l.holdTTL() / 10)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			l.tend(ctx, false)
		case <-ctx.Done():
			l.mu.Lock()
			l.started = false
			l.mu.Unlock()
			l.tend(context.Background(), true)
			l.drain()
			return nil
		}
	}
}

// tend looks after this process's holds, once a tick:
//   - a hold with Pods admitted under it is written: they become entries,
//     and the hold is renewed (another replica denied for want of the held
//     slots sees them within a tick);
//   - an idle hold is renewed shortly before it stops being usable, so the
//     next burst of workspaces is admitted at once;
//   - an idle hold is returned when the org nears its limit (read from the
//     ledger, with no write) or after HoldIdle;
//   - with all, every hold is returned.
func (l *Ledger) tend(ctx context.Context, all bool) {
	now := time.Now()
	tick := l.holdTTL() / 10
	var kick, check []*berthv1alpha1.Organization
	l.mu.Lock()
	for _, h := range l.holds {
		if h.org == nil {
			continue
		}
		idle := now.Sub(h.lastUse)
		switch {
		case all || idle > l.holdIdle():
			h.shrink = true
			kick = append(kick, h.org)
		case len(h.used) > 0 || h.usable.Sub(now) < 2*tick:
			kick = append(kick, h.org)
		case idle > 2*tick:
			check = append(check, h.org)
		}
	}
	l.mu.Unlock()
	for _, org := range check {
		rctx, cancel := context.WithTimeout(ctx, tick)
		_, b, err := l.read(rctx, org.Name)
		cancel()
		if err != nil || org.Spec.MaxWorkspaces == nil || free(org, b, l.Replica) < minHold*holdShare {
			l.mu.Lock()
			if h := l.holds[org.Name]; h != nil {
				h.shrink = true
			}
			l.mu.Unlock()
			kick = append(kick, org)
		}
	}
	for _, org := range kick {
		l.kick(org)
	}
}

func (l *Ledger) holdIdle() time.Duration {
	if l.HoldIdle > 0 {
		return l.HoldIdle
	}
	return DefaultHoldIdle
}

// drain waits, up to a hold's TTL, for the holds to be written back.
func (l *Ledger) drain() {
	deadline := time.Now().Add(l.holdTTL())
	for time.Now().Before(deadline) {
		l.mu.Lock()
		n := len(l.holds)
		l.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Expired reports whether any of holds expired before before.
func Expired(holds map[string]Hold, before time.Time) bool {
	for _, h := range holds {
		if h.Expires.Before(before) {
			return true
		}
	}
	return false
}

// DropExpired removes from org's ledger the holds that expired before
// before: their replicas stopped without returning them. The caller first
// records the live Pods the ledger lacks, since Pods admitted under a lost
// hold have no entry. It reports whether holds remain, to be looked at
// again.
func (l *Ledger) DropExpired(ctx context.Context, org string, before time.Time) (bool, error) {
	for {
		cm, b, err := l.read(ctx, org)
		if err != nil || cm == nil {
			return false, err
		}
		changed := false
		for r, h := range b.holds {
			if h.Expires.Before(before) {
				delete(b.holds, r)
				changed = true
			}
		}
		if !changed {
			return len(b.holds) > 0, nil
		}
		err = l.write(ctx, org, cm, b)
		if !isConflict(err) {
			return len(b.holds) > 0, err
		}
		l.forget(org)
	}
}
