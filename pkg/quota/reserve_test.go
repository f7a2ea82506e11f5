package quota_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/quota"
	"berth.dev/berth/pkg/testutil"
)

// TestReserveIsExactAcrossReplicas runs 60 concurrent reservations through
// three ledgers (three replicas) sharing one store, as in a burst of creates.
func TestReserveIsExactAcrossReplicas(t *testing.T) {
	scheme := runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(scheme))
	store := fake.NewClientBuilder().WithScheme(scheme).Build()
	var conflicts sync.Map
	replicas := make([]*quota.Ledger, 3)
	for i := range replicas {
		replicas[i] = &quota.Ledger{Client: store, Namespace: "berth-system", OnConflict: func() { conflicts.Store(i, true) }}
	}
	org := testutil.Org("acme").MaxWorkspaces(17).MaxGPUs(5).Obj()

	var mu sync.Mutex
	admitted, denied := 0, 0
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := quota.Entry{UID: types.UID(fmt.Sprint(i)), Class: berthv1alpha1.ClassWorkspace, Admitted: time.Now()}
			err := replicas[i%3].Reserve(context.Background(), org, quota.Key("team", fmt.Sprintf("ws-%d", i)), e)
			mu.Lock()
			defer mu.Unlock()
			var exceeded *quota.ExceededError
			switch {
			case err == nil:
				admitted++
			case errors.As(err, &exceeded):
				denied++
			default:
				t.Errorf("reserve %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 17, admitted)
	assert.Equal(t, 43, denied)
	entries, err := replicas[0].Entries(context.Background(), "acme")
	require.NoError(t, err)
	assert.Equal(t, quota.Usage{Workspaces: 17}, quota.UsageOf(entries))

	// The same Pod admitted twice (a retried request) is charged once.
	again := entries[quota.Key("team", "ws-0")]
	if again.UID != "" {
		require.NoError(t, replicas[1].Reserve(context.Background(), org, quota.Key("team", "ws-0"), again))
	}

	// Released entries make room again.
	keys := map[string]types.UID{}
	for k, e := range entries {
		keys[k] = e.UID
		if len(keys) == 2 {
			break
		}
	}
	require.NoError(t, replicas[2].Release(context.Background(), "acme", keys))
	e := quota.Entry{UID: "late", Class: berthv1alpha1.ClassWorkspace, Admitted: time.Now()}
	require.NoError(t, replicas[0].Reserve(context.Background(), org, quota.Key("team", "late"), e))
	entries, err = replicas[0].Entries(context.Background(), "acme")
	require.NoError(t, err)
	assert.Equal(t, int64(16), quota.UsageOf(entries).Workspaces)
	assert.Equal(t, time.UTC, entries[quota.Key("team", "late")].Admitted.Location(), "entries round-trip")
}

// TestDenialIsRecheckedAfterAnotherWriterReleases: a replica that last wrote
// a full ledger must not deny on its own copy after a release elsewhere.
func TestDenialIsRecheckedAfterAnotherWriterReleases(t *testing.T) {
	scheme := runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(scheme))
	store := fake.NewClientBuilder().WithScheme(scheme).Build()
	webhook := &quota.Ledger{Client: store, Namespace: "berth-system"}
	controller := &quota.Ledger{Client: store, Namespace: "berth-system"}
	org := testutil.Org("acme").MaxWorkspaces(1).Obj()
	ctx := context.Background()

	require.NoError(t, webhook.Reserve(ctx, org, quota.Key("team", "a"), ws("a")))
	var exceeded *quota.ExceededError
	require.ErrorAs(t, webhook.Reserve(ctx, org, quota.Key("team", "b"), ws("b")), &exceeded)
	require.NoError(t, controller.Release(ctx, "acme", map[string]types.UID{quota.Key("team", "a"): "a"}))
	require.NoError(t, webhook.Reserve(ctx, org, quota.Key("team", "b"), ws("b")), "the release made room")
}
