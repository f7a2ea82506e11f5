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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/quota"
	"berth.dev/berth/pkg/testutil"
)

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func ws() quota.Entry { return quota.Entry{Class: berthv1alpha1.ClassWorkspace} }

func gpus(class berthv1alpha1.Class, n int64) quota.Entry {
	return quota.Entry{Class: class, GPUs: n}
}

func newLedger(c quota.Client) *quota.Ledger {
	return quota.NewLedger(c, "berth-system", clocktesting.NewFakePassiveClock(now), quota.Options{})
}

func fakeClient() client.Client {
	return fake.NewClientBuilder().WithScheme(scheme()).Build()
}

func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = corev1.AddToScheme(s)
	return s
}

func TestReserveChargesEachUIDOnce(t *testing.T) {
	l := newLedger(fakeClient())
	org := testutil.Org("acme").MaxWorkspaces(2).Obj()
	ctx := t.Context()
	require.NoError(t, l.Reserve(ctx, org, "a", ws()))
	require.NoError(t, l.Reserve(ctx, org, "a", ws()), "a retried admission of the same Pod")
	require.NoError(t, l.Reserve(ctx, org, "b", ws()))
	err := l.Reserve(ctx, org, "c", ws())
	var exceeded *quota.ExceededError
	require.ErrorAs(t, err, &exceeded)
	assert.Equal(t, "maxWorkspaces", exceeded.Field)
	assert.Contains(t, err.Error(), "spec.maxWorkspaces")

	entries, err := l.Entries(ctx, org.Name)
	require.NoError(t, err)
	assert.Equal(t, map[types.UID]quota.Entry{
		"a": {Class: berthv1alpha1.ClassWorkspace, Admitted: now},
		"b": {Class: berthv1alpha1.ClassWorkspace, Admitted: now},
	}, entries)
}

// A second Pod of a running Pod's name has another UID: it is charged
// beside the first, never in its place, so a create the API server then
// refuses cannot shrink the running Pod's charge.
func TestAnotherUIDNeverReplacesACharge(t *testing.T) {
	l := newLedger(fakeClient())
	org := testutil.Org("acme").MaxGPUs(4).Obj()
	ctx := t.Context()
	require.NoError(t, l.Reserve(ctx, org, "running", gpus(berthv1alpha1.ClassInference, 4)))
	for i := range 3 {
		err := l.Reserve(ctx, org, types.UID(fmt.Sprintf("same-name-%d", i)), gpus(berthv1alpha1.ClassInference, 1))
		var exceeded *quota.ExceededError
		require.ErrorAs(t, err, &exceeded, "attempt %d", i)
		assert.Equal(t, "maxGPUs", exceeded.Field)
	}
	entries, err := l.Entries(ctx, org.Name)
	require.NoError(t, err)
	assert.Equal(t, quota.Usage{GPUs: 4}, quota.UsageOf(entries))
}

func TestBuildGPUsAreCharged(t *testing.T) {
	l := newLedger(fakeClient())
	org := testutil.Org("acme").MaxGPUs(2).Obj()
	require.NoError(t, l.Reserve(t.Context(), org, "build", gpus(berthv1alpha1.ClassBuild, 2)))
	require.Error(t, l.Reserve(t.Context(), org, "vllm", gpus(berthv1alpha1.ClassInference, 1)))
}

func TestFitsWritesNothing(t *testing.T) {
	c := fakeClient()
	l := newLedger(c)
	org := testutil.Org("acme").MaxWorkspaces(1).Obj()
	require.NoError(t, l.Fits(t.Context(), org, "a", ws()))
	entries, err := l.Entries(t.Context(), org.Name)
	require.NoError(t, err)
	assert.Empty(t, entries)
	require.NoError(t, l.Reserve(t.Context(), org, "a", ws()))
	require.NoError(t, l.Fits(t.Context(), org, "a", ws()), "already charged")
	require.Error(t, l.Fits(t.Context(), org, "b", ws()))
}

func TestRecordAndRelease(t *testing.T) {
	l := newLedger(fakeClient())
	ctx := t.Context()
	require.NoError(t, l.Record(ctx, "acme", map[types.UID]quota.Entry{"a": ws(), "b": ws(), "c": ws()}))
	require.NoError(t, l.Release(ctx, "acme", []types.UID{"a", "c", "never-there"}))
	entries, err := l.Entries(ctx, "acme")
	require.NoError(t, err)
	assert.Equal(t, map[types.UID]quota.Entry{"b": ws()}, entries)
	require.NoError(t, l.Release(ctx, "nobody", []types.UID{"x"}), "an org without a ledger")
}

// Three replicas, each a Ledger of its own on the same store, reserve 50
// workspaces at once against a limit of 20: exactly 20 are admitted, with
// no cache, a cache as fresh as the store, and a cache that lags.
func TestConcurrentReplicasNeverOvershoot(t *testing.T) {
	for name, cache := range map[string]func(client.Client) client.Reader{
		"no cache":      func(client.Client) client.Reader { return nil },
		"fresh cache":   func(c client.Client) client.Reader { return c },
		"lagging cache": func(client.Client) client.Reader { return frozenCache{} },
	} {
		t.Run(name, func(t *testing.T) {
			c := fakeClient()
			var conflicts atomic.Int64
			replicas := make([]*quota.Ledger, 3)
			for i := range replicas {
				replicas[i] = quota.NewLedger(c, "berth-system", clocktesting.NewFakePassiveClock(now), quota.Options{
					MaxAttempts: 1000, OnConflict: func() { conflicts.Add(1) }, Cache: cache(c),
				})
			}
			org := testutil.Org("acme").MaxWorkspaces(20).Obj()
			var admitted atomic.Int64
			var wg sync.WaitGroup
			for i := range 50 {
				wg.Go(func() {
					err := replicas[i%3].Reserve(t.Context(), org, types.UID(fmt.Sprintf("pod-%02d", i)), ws())
					var exceeded *quota.ExceededError
					switch {
					case err == nil:
						admitted.Add(1)
					case !errors.As(err, &exceeded):
						t.Errorf("pod-%02d: %v", i, err)
					}
				})
			}
			wg.Wait()
			assert.EqualValues(t, 20, admitted.Load())
			entries, err := replicas[0].Entries(t.Context(), org.Name)
			require.NoError(t, err)
			assert.Len(t, entries, 20)
			t.Logf("writes lost to another replica: %d", conflicts.Load())
		})
	}
}

// frozenCache is a watch that has not seen a ledger yet.
type frozenCache struct{ client.Reader }

func (frozenCache) Get(_ context.Context, key client.ObjectKey, _ client.Object, _ ...client.GetOption) error {
	return apierrors.NewNotFound(corev1.Resource("configmaps"), key.Name)
}

// readCounter counts the ledger reads that reach the API server.
type readCounter struct {
	quota.Client
	reads atomic.Int64
}

func (c *readCounter) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c.reads.Add(1)
	return c.Client.Get(ctx, key, obj, opts...)
}

// With a cache, a replica's changes start from the ledger it last wrote:
// the API server is read once, not once a change.
func TestAReplicaStartsFromTheLedgerItWrote(t *testing.T) {
	c := &readCounter{Client: fakeClient()}
	l := quota.NewLedger(c, "berth-system", clocktesting.NewFakePassiveClock(now), quota.Options{Cache: frozenCache{}})
	org := testutil.Org("acme").MaxWorkspaces(5).Obj()
	for i := range 5 {
		require.NoError(t, l.Reserve(t.Context(), org, types.UID(fmt.Sprintf("pod-%d", i)), ws()))
	}
	assert.EqualValues(t, 1, c.reads.Load(), "reads of the API server for 5 reservations")
	require.NoError(t, l.Release(t.Context(), org.Name, []types.UID{"pod-0"}))
	assert.EqualValues(t, 1, c.reads.Load(), "reads of the API server after a release")
	entries, err := l.Entries(t.Context(), org.Name)
	require.NoError(t, err)
	assert.Len(t, entries, 4)
}

// A replica's known ledger may lack another replica's latest write. A
// decision to change nothing is made again on the API server's ledger, so
// a release of a Pod charged elsewhere is never skipped, and a Pod released
// elsewhere is charged again.
func TestAStaleLedgerNeverSkipsAChange(t *testing.T) {
	c := fakeClient()
	newReplica := func() *quota.Ledger {
		return quota.NewLedger(c, "berth-system", clocktesting.NewFakePassiveClock(now), quota.Options{Cache: frozenCache{}})
	}
	a, b := newReplica(), newReplica()
	org := testutil.Org("acme").MaxWorkspaces(2).Obj()
	ctx := t.Context()
	require.NoError(t, a.Reserve(ctx, org, "x", ws()))
	require.NoError(t, b.Reserve(ctx, org, "y", ws()))
	require.NoError(t, a.Release(ctx, org.Name, []types.UID{"y"}), "a knows the ledger before y")
	require.NoError(t, b.Release(ctx, org.Name, []types.UID{"x"}))
	require.NoError(t, a.Reserve(ctx, org, "x", ws()), "a knows the ledger with x")
	entries, err := a.Entries(ctx, org.Name)
	require.NoError(t, err)
	assert.Equal(t, map[types.UID]quota.Entry{"x": {Class: berthv1alpha1.ClassWorkspace, Admitted: now}}, entries)
}

// failingClient fails every write.
type failingClient struct{ quota.Client }

func (failingClient) Create(context.Context, client.Object, ...client.CreateOption) error {
	return errors.New("etcd is down")
}

func TestAFailedWriteFailsTheReservation(t *testing.T) {
	l := newLedger(failingClient{fakeClient()})
	err := l.Reserve(t.Context(), testutil.Org("acme").MaxWorkspaces(1).Obj(), "a", ws())
	require.ErrorContains(t, err, "etcd is down")
	var exceeded *quota.ExceededError
	assert.False(t, errors.As(err, &exceeded))
}

// The largest org berth claims fits in one ConfigMap, at the longest lines.
func TestTheFullLedgerFitsAConfigMap(t *testing.T) {
	c := fakeClient()
	l := newLedger(c)
	add := make(map[types.UID]quota.Entry, quota.MaxEntries)
	for i := range quota.MaxEntries {
		add[types.UID(fmt.Sprintf("%08d-0000-0000-0000-000000000000", i))] = quota.Entry{Class: berthv1alpha1.ClassInference, GPUs: 99999, Admitted: now}
	}
	require.NoError(t, l.Record(t.Context(), "big", add))
	cm := &corev1.ConfigMap{}
	require.NoError(t, c.Get(t.Context(), client.ObjectKey{Namespace: "berth-system", Name: quota.Name("big")}, cm))
	assert.Less(t, len(cm.Data[quota.DataKey]), 1<<20, "a ConfigMap holds at most 1 MiB")

	err := l.Reserve(t.Context(), testutil.Org("big").Obj(), "one-more", ws())
	var exceeded *quota.ExceededError
	require.ErrorAs(t, err, &exceeded)
	assert.Contains(t, err.Error(), "the most berth keeps for one org")
}

func TestUnreadableLinesAreDropped(t *testing.T) {
	c := fakeClient()
	require.NoError(t, c.Create(t.Context(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "berth-system", Name: quota.Name("acme")},
		Data: map[string]string{quota.DataKey: strings.Join([]string{
			"a workspace 0 1767323045", "garbage", "b inference x 1", "c inference -1 1", "d inference 2 1767323045", "",
		}, "\n")},
	}))
	entries, err := newLedger(c).Entries(t.Context(), "acme")
	require.NoError(t, err)
	assert.Equal(t, map[types.UID]quota.Entry{
		"a": {Class: berthv1alpha1.ClassWorkspace, Admitted: time.Unix(1767323045, 0).UTC()},
		"d": {Class: berthv1alpha1.ClassInference, GPUs: 2, Admitted: time.Unix(1767323045, 0).UTC()},
	}, entries)
}

// A ledger written before entries were keyed by UID keeps its charges.
func TestTheEarlierFormatIsRead(t *testing.T) {
	c := fakeClient()
	require.NoError(t, c.Create(t.Context(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "berth-system", Name: quota.Name("acme")},
		Data:       map[string]string{quota.DataKey: "team_vllm uid-1 inference 2 1767323045000000001\n"},
	}))
	entries, err := newLedger(c).Entries(t.Context(), "acme")
	require.NoError(t, err)
	assert.Equal(t, map[types.UID]quota.Entry{
		"uid-1": {Class: berthv1alpha1.ClassInference, GPUs: 2, Admitted: time.Unix(1767323045, 0).UTC()},
	}, entries)
}
