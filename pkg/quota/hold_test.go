package quota_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/quota"
	"berth.dev/berth/pkg/testutil"
)

// replicas returns n started ledgers with holds on one store, and the count
// of their writes.
func replicas(t *testing.T, store client.Client, n int) ([]*quota.Ledger, *atomic.Int64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	var writes atomic.Int64
	ls := make([]*quota.Ledger, n)
	for i := range ls {
		ls[i] = &quota.Ledger{
			Client: store, Namespace: "berth-system", Replica: fmt.Sprintf("replica-%d", i),
			HoldSize: 8, HoldTTL: 2 * time.Second,
			OnWrite: func(int, time.Duration) { writes.Add(1) },
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.NoError(t, ls[i].Start(ctx))
		}()
	}
	require.Eventually(t, func() bool {
		return ls[n-1].Reserve(ctx, testutil.Org("warm").Obj(), quota.Key("x", "y"), ws("warm")) == nil
	}, time.Second, 10*time.Millisecond)
	return ls, &writes
}

// reserve runs n reservations of workspaces named prefix-i over the replicas
// in waves of 30 at once, and returns how many were admitted; every other
// one must be an *ExceededError.
func reserve(t *testing.T, ls []*quota.Ledger, org *berthv1alpha1.Organization, prefix string, n int) int {
	var admitted atomic.Int64
	for wave := 0; wave < n; wave += 30 {
		var wg sync.WaitGroup
		for i := wave; i < min(n, wave+30); i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("%s-%d", prefix, i)
				e := quota.Entry{UID: types.UID(name), Class: berthv1alpha1.ClassWorkspace, Admitted: time.Now()}
				err := ls[i%len(ls)].Reserve(context.Background(), org, quota.Key("team", name), e)
				var exceeded *quota.ExceededError
				switch {
				case err == nil:
					admitted.Add(1)
				case errors.As(err, &exceeded):
				default:
					t.Errorf("reserve %s: %v", name, err)
				}
			}()
		}
		wg.Wait()
	}
	return int(admitted.Load())
}

func ledgerOf(t *testing.T, store client.Client, org string) *corev1.ConfigMap {
	cm := &corev1.ConfigMap{}
	require.NoError(t, store.Get(context.Background(), client.ObjectKey{Namespace: "berth-system", Name: quota.Name(org)}, cm))
	return cm
}

// TestHoldsAreExactAcrossReplicas: three replicas admitting under holds
// never admit more than the limit, admit up to it, and leave every admitted
// Pod in the ledger once they stop.
func TestHoldsAreExactAcrossReplicas(t *testing.T) {
	scheme := runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(scheme))
	store := fake.NewClientBuilder().WithScheme(scheme).Build()
	ls, writes := replicas(t, store, 3)
	org := testutil.Org("acme").MaxWorkspaces(300).Obj()

	// Far from the limit, holds spare most writes.
	before := writes.Load()
	require.Equal(t, 150, reserve(t, ls, org, "far", 150))
	assert.Less(t, writes.Load()-before, int64(75), "holds write about once per half hold")

	// Up to the limit and past it: exactly the rest is admitted.
	assert.Equal(t, 150, reserve(t, ls, org, "near", 300))

	// Within a tick or two the replicas write back every Pod they admitted.
	var entries map[string]quota.Entry
	require.Eventually(t, func() bool {
		var err error
		entries, err = ls[0].Entries(context.Background(), "acme")
		require.NoError(t, err)
		return len(entries) == 300
	}, 5*time.Second, 50*time.Millisecond)
	assert.Equal(t, quota.Usage{Workspaces: 300}, quota.UsageOf(entries))
	// And return their holds once idle.
	require.Eventually(t, func() bool {
		return ledgerOf(t, store, "acme").Data[quota.HoldsKey] == ""
	}, 5*time.Second, 50*time.Millisecond)
}

// startedLedger returns a ledger with holds of 16 on a fake store, started
// until stop (or the test's end).
func startedLedger(t *testing.T) (*quota.Ledger, client.Client, context.Context, func()) {
	scheme := runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(scheme))
	store := fake.NewClientBuilder().WithScheme(scheme).Build()
	l := &quota.Ledger{Client: store, Namespace: "berth-system", Replica: "r", HoldSize: 16, HoldTTL: time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		assert.NoError(t, l.Start(ctx))
	}()
	stop := func() { cancel(); <-stopped }
	t.Cleanup(cancel)
	return l, store, ctx, stop
}

// takeHold reserves workspaces w0, w1, ... of org until l has written a
// hold (its Start may not have run yet), and returns how many it reserved.
func takeHold(t *testing.T, l *quota.Ledger, store client.Client, org *berthv1alpha1.Organization) int {
	n := 0
	require.Eventually(t, func() bool {
		name := fmt.Sprintf("w%d", n)
		require.NoError(t, l.Reserve(context.Background(), org, quota.Key("team", name), ws(name)))
		n++
		return strings.Contains(ledgerOf(t, store, org.Name).Data[quota.HoldsKey], "r ")
	}, 5*time.Second, 10*time.Millisecond, "a started ledger takes a hold")
	return n
}

// TestHoldsAreReturnedOnStop: a stopping replica writes back what it
// admitted and returns its hold.
func TestHoldsAreReturnedOnStop(t *testing.T) {
	l, store, ctx, stop := startedLedger(t)
	org := testutil.Org("acme").MaxWorkspaces(1000).Obj()
	n := takeHold(t, l, store, org)
	assert.Contains(t, ledgerOf(t, store, "acme").Data[quota.HoldsKey], "r 16 ", "a hold of 16 is taken")
	require.NoError(t, l.Reserve(ctx, org, quota.Key("team", "b"), ws("b")))
	require.NoError(t, l.Reserve(ctx, org, quota.Key("team", "b"), ws("b")), "admitted again, charged once")

	stop()
	cm := ledgerOf(t, store, "acme")
	assert.Empty(t, cm.Data[quota.HoldsKey])
	entries, err := l.Entries(context.Background(), "acme")
	require.NoError(t, err)
	assert.Len(t, entries, n+1)
}

// TestDropExpired drops only holds that expired before the given time.
func TestDropExpired(t *testing.T) {
	scheme := runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(scheme))
	now := time.Now()
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "berth-system", Name: quota.Name("acme")},
		Data: map[string]string{
			quota.DataKey: "team_a " + string(ws("a").UID) + " workspace 0 1\n",
			quota.HoldsKey: fmt.Sprintf("gone 10 %d\nlive 5 %d\n",
				now.Add(-time.Hour).UnixNano(), now.Add(time.Minute).UnixNano()),
		},
	}
	store := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cm).Build()
	l := &quota.Ledger{Client: store, Namespace: "berth-system"}
	org := testutil.Org("acme").MaxWorkspaces(16).Obj()

	var exceeded *quota.ExceededError
	require.ErrorAs(t, l.Fits(context.Background(), org, quota.Key("team", "b"), ws("b")), &exceeded, "1 entry and holds of 15 fill 16")
	remain, err := l.DropExpired(context.Background(), "acme", now.Add(-time.Minute))
	require.NoError(t, err)
	assert.True(t, remain)
	assert.Equal(t, fmt.Sprintf("live 5 %d\n", now.Add(time.Minute).UnixNano()), ledgerOf(t, store, "acme").Data[quota.HoldsKey])
	assert.NoError(t, l.Fits(context.Background(), org, quota.Key("team", "b"), ws("b")))
}

// TestAdmitHeldHandsOutTokens: the mutating webhook's path admits under a
// hold with a new token per call, writes the tokens as entries, and stops
// once the org has too little room for holds.
func TestAdmitHeldHandsOutTokens(t *testing.T) {
	l, store, ctx, stop := startedLedger(t)
	org := testutil.Org("acme").MaxWorkspaces(1000).Obj()
	entry := quota.Entry{Class: berthv1alpha1.ClassWorkspace, Admitted: time.Now()}
	_, ok := l.AdmitHeld(org, "team", entry)
	assert.False(t, ok, "no hold before a reservation took one")
	n := takeHold(t, l, store, org)

	tokens := map[string]bool{}
	for range 5 {
		tok, ok := l.AdmitHeld(org, "team", entry)
		require.True(t, ok)
		assert.Len(t, tok, 16)
		tokens[tok] = true
	}
	assert.Len(t, tokens, 5, "every call has a new token")
	gpu := quota.Entry{Class: berthv1alpha1.ClassInference, GPUs: 1}
	_, ok = l.AdmitHeld(testutil.Org("acme").MaxWorkspaces(1000).MaxGPUs(4).Obj(), "team", gpu)
	assert.False(t, ok, "GPUs are never held")
	// Near a limit there is no hold to admit under.
	small := testutil.Org("small").MaxWorkspaces(20).Obj()
	for _, name := range []string{"y", "z"} {
		require.NoError(t, l.Reserve(ctx, small, quota.Key("team", name), ws(name)))
	}
	_, ok = l.AdmitHeld(small, "team", quota.Entry{Class: berthv1alpha1.ClassWorkspace})
	assert.False(t, ok)

	stop()
	entries, err := l.Entries(context.Background(), "acme")
	require.NoError(t, err)
	assert.Len(t, entries, n+5)
	for tok := range tokens {
		e, ok := entries[quota.TokenKey("team", tok)]
		require.True(t, ok, "token %s is an entry", tok)
		got, isToken := e.Token()
		assert.True(t, isToken)
		assert.Equal(t, tok, got)
		assert.Equal(t, "team", e.Namespace)
	}
	_, isToken := entries[quota.Key("team", "w0")].Token()
	assert.False(t, isToken)

}
