package metering

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/metering"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// hold is the test's own finalizer: it keeps a deleted Pod readable, so
// that the test can take its start and delete times as the truth.
const hold = "test.berth.dev/hold"

// prices is the local cluster's pools file, which berth-meter reads as is.
const prices = "../../../manifests/local-cluster/pools.yaml"

// startMeter runs berth-meter against the cluster and the database, with
// 2 s intervals, and waits until it is ready.
func startMeter(t *testing.T, env *framework.ClusterEnv, dsn string) *framework.Process {
	t.Helper()
	p, _ := runMeter(t, "--kubeconfig", env.Kubeconfig(), "--database-url", dsn, "--prices", prices, "--interval", "2s")
	return p
}

// runMeter starts `berth-meter run` with args, its API and health probe on
// ports found free and its metrics off, waits until it is ready, and
// returns it with its API's address.
func runMeter(t *testing.T, args ...string) (*framework.Process, string) {
	t.Helper()
	p, ports := framework.StartServer(t, "berth-meter", framework.Binary(t, "berth-meter"), 2,
		func(ports []int) []string {
			return append([]string{"run", "--api-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[0]),
				"--metrics-bind-address", "0", "--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[1])}, args...)
		},
		func(ports []int) string { return fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[1]) })
	return p, fmt.Sprintf("127.0.0.1:%d", ports[0])
}

// lifecycle creates and deletes n workspace Pods on spot nodes, staggered
// over about spread, and returns them. It calls kill at `kills` random
// points among the creates and deletes.
func lifecycle(t *testing.T, env *framework.ClusterEnv, ns string, n int, spread time.Duration, rng *rand.Rand, kills int, kill func()) []*corev1.Pod {
	t.Helper()
	nodes, err := env.NodesByPool(t.Context())
	require.NoError(t, err)
	spot := nodes["spot-ssd"]
	require.NotEmpty(t, spot)
	type step struct {
		at           time.Duration
		create, kill bool
		i            int
	}
	var steps []step
	for i := range n {
		start := time.Duration(rng.Int64N(int64(spread / 2)))
		steps = append(steps, step{at: start, create: true, i: i},
			step{at: start + time.Second + time.Duration(rng.Int64N(int64(spread/2))), i: i})
	}
	for range kills {
		steps = append(steps, step{at: time.Duration(rng.Int64N(int64(spread))), kill: true})
	}
	slices.SortFunc(steps, func(a, b step) int { return int(a.at - b.at) })
	pods := make([]*corev1.Pod, n)
	begin := time.Now()
	for _, s := range steps {
		time.Sleep(time.Until(begin.Add(s.at)))
		if s.kill {
			kill()
			continue
		}
		if s.create {
			pod := testutil.Pod(fmt.Sprintf("ws-%d", s.i)).Namespace(ns).Class(berthv1alpha1.ClassWorkspace).
				User(fmt.Sprintf("dev-%d", s.i%3)).Resource(corev1.ResourceCPU, "1").Resource(corev1.ResourceMemory, "2Gi").
				NodeName(spot[s.i%len(spot)].Name).Obj()
			pod.Finalizers = []string{hold}
			require.NoError(t, env.Client.Create(t.Context(), pod))
			pods[s.i] = pod
			continue
		}
		// A Pod is deleted once it runs, so that it has a start. With no
		// grace period: kwok deletes it again, with none, once its
		// containers stop, and the API server then moves deletionTimestamp
		// to that second. The meter charges to the first request it saw,
		// and the truth below reads the last; without a grace period
		// there is only one.
		framework.Eventually(t, 30*time.Second, "Pod "+pods[s.i].Name+" runs", func(ctx context.Context) (bool, error) {
			err := env.Client.Get(ctx, client.ObjectKeyFromObject(pods[s.i]), pods[s.i])
			return pods[s.i].Status.StartTime != nil, err
		})
		require.NoError(t, env.Client.Delete(t.Context(), pods[s.i], client.GracePeriodSeconds(0)))
	}
	return pods
}

// settle waits until the meter has let go of every Pod, then returns each
// Pod's seconds run by the API server's own timestamps, and releases them.
func settle(t *testing.T, env *framework.ClusterEnv, pods []*corev1.Pod) map[string]float64 {
	t.Helper()
	ran := map[string]float64{}
	for _, pod := range pods {
		framework.Eventually(t, time.Minute, "the meter lets go of "+pod.Name, func(ctx context.Context) (bool, error) {
			err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
			return !controllerutil.ContainsFinalizer(pod, metering.Finalizer), err
		})
		require.NotNil(t, pod.DeletionTimestamp)
		require.NotNil(t, pod.Status.StartTime, pod.Name)
		end := pod.DeletionTimestamp.Add(-time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second)
		ran[string(pod.UID)] = end.Sub(pod.Status.StartTime.Time).Seconds()
		patch := client.MergeFrom(pod.DeepCopy())
		controllerutil.RemoveFinalizer(pod, hold)
		require.NoError(t, env.Client.Patch(t.Context(), pod, patch))
	}
	return ran
}

// stored returns the seconds the database holds per Pod UID, and checks
// that the hourly sums hold the same.
func stored(t *testing.T, pool *pgxpool.Pool) map[string]float64 {
	t.Helper()
	read := func(table string) map[string]float64 {
		rows, err := pool.Query(t.Context(), "SELECT uid::text, sum(running_seconds) FROM "+table+" GROUP BY uid")
		require.NoError(t, err)
		defer rows.Close()
		out := map[string]float64{}
		for rows.Next() {
			var uid string
			var s float64
			require.NoError(t, rows.Scan(&uid, &s))
			out[uid] = s
		}
		require.NoError(t, rows.Err())
		return out
	}
	out := read("usage_intervals")
	hourly := read("usage_hourly")
	require.Len(t, hourly, len(out))
	for uid, s := range out {
		assert.InDelta(t, s, hourly[uid], 1e-6, "Pod %s: the hourly sum agrees with the intervals", uid)
	}
	return out
}

func assertSeconds(t *testing.T, want, got map[string]float64) {
	t.Helper()
	require.Len(t, got, len(want), "one set of rows per Pod")
	for uid, w := range want {
		assert.InDelta(t, w, got[uid], 1e-6, "Pod %s: seconds run, to the second", uid)
	}
}

// A scripted lifecycle of Pods: the database's totals equal the seconds
// each Pod ran by the API server's timestamps, and the rows carry the org
// from the namespace, the pool, spot and the cost.
func TestMeterChargesEachPodToTheSecond(t *testing.T) {
	env := framework.Cluster(t)
	pool, dsn := migrated(t)
	startMeter(t, env, dsn)
	ns := env.Namespace(t, "acme")

	pods := lifecycle(t, env, ns, 6, 10*time.Second, rand.New(rand.NewPCG(3, 4)), 0, nil)
	want := settle(t, env, pods)
	assertSeconds(t, want, stored(t, pool))

	var orgs []string
	var spotRows, costly int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT array_agg(DISTINCT org), count(*) FILTER (WHERE spot AND pool = 'spot-ssd'),
		count(*) FILTER (WHERE cost_dollars > 0) FROM usage_intervals`).Scan(&orgs, &spotRows, &costly))
	assert.Equal(t, []string{"acme"}, orgs, "the org is the namespace's")
	var rows int
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT count(*) FROM usage_intervals").Scan(&rows))
	assert.Equal(t, rows, spotRows, "every row is on the spot pool")
	assert.Equal(t, rows, costly, "every row has a cost from the pool's spot price")

	// 1 CPU on a 16-CPU node at $0.187 an hour: the share is 1/16.
	var cpu, cost, secs float64
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT sum(cpu_core_seconds), sum(cost_dollars), sum(running_seconds) FROM usage_intervals").Scan(&cpu, &cost, &secs))
	assert.InDelta(t, secs, cpu, 1e-6)
	assert.InDelta(t, 0.187/16*secs/3600, cost, 1e-9)
}

// The meter killed with SIGKILL at 10 random points of a lifecycle, and
// restarted each time: the same totals.
func TestMeterKilledAtRandomLosesNothing(t *testing.T) {
	env := framework.Cluster(t)
	pool, dsn := migrated(t)
	meter := startMeter(t, env, dsn)
	ns := env.Namespace(t, "acme")

	kill := func() {
		require.NoError(t, syscall.Kill(meter.PID(), syscall.SIGKILL))
		meter.Stop()
		meter = startMeter(t, env, dsn)
	}
	pods := lifecycle(t, env, ns, 12, 20*time.Second, rand.New(rand.NewPCG(7, 8)), 10, kill)
	want := settle(t, env, pods)
	assertSeconds(t, want, stored(t, pool))
}

// PostgreSQL down for 30 s in the middle of a lifecycle, while Pods start
// and are deleted: the meter retries and, once the database is back, the
// totals are the same to the second.
func TestMeterOutlastsADatabaseOutage(t *testing.T) {
	env := framework.Cluster(t)
	pg := framework.PostgresServer(t)
	pool, dsn := migrated(t)
	startMeter(t, env, dsn)
	ns := env.Namespace(t, "acme")

	back := make(chan error, 1)
	outage := func() {
		pg.Stop(t)
		time.AfterFunc(30*time.Second, func() { back <- pg.Start(context.Background()) })
	}
	pods := lifecycle(t, env, ns, 8, 40*time.Second, rand.New(rand.NewPCG(9, 10)), 1, outage)
	require.NoError(t, <-back, "PostgreSQL starts again")
	pool.Reset()
	want := settle(t, env, pods)
	assertSeconds(t, want, stored(t, pool))
}

// berth-meter mirrors each Organization's limits into quotas, and each
// build Job's queue and run times into builds.
func TestMeterMirrorsQuotasAndBuilds(t *testing.T) {
	env := framework.Cluster(t)
	pool, dsn := migrated(t)
	startMeter(t, env, dsn)

	org := testutil.Org("mirror").MaxWorkspaces(10).MaxGPUs(4).Obj()
	env.Create(t, org)
	quota := func(ctx context.Context) (ws, gpus, builds *int32, err error) {
		err = pool.QueryRow(ctx, "SELECT max_workspaces, max_gpus, max_concurrent_builds FROM quotas WHERE org = 'mirror'").Scan(&ws, &gpus, &builds)
		return
	}
	framework.Eventually(t, 30*time.Second, "the org's quotas mirrored", func(ctx context.Context) (bool, error) {
		ws, gpus, builds, err := quota(ctx)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		return ws != nil && *ws == 10 && gpus != nil && *gpus == 4 && builds == nil, err
	})
	patch := client.MergeFrom(org.DeepCopy())
	org.Spec.MaxConcurrentBuilds = ptr.To[int32](2)
	require.NoError(t, env.Client.Patch(t.Context(), org, patch))
	framework.Eventually(t, 30*time.Second, "the new limit mirrored", func(ctx context.Context) (bool, error) {
		_, _, builds, err := quota(ctx)
		return builds != nil && *builds == 2, err
	})

	// A build queued a minute ago, then released: the Job controller starts
	// it and kwok finishes its Pod.
	ns := env.Namespace(t, "mirror")
	queued := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	job := testutil.Job("build").Namespace(ns).Class(berthv1alpha1.ClassBuild).Project("api").User("bo").
		Annotation(berthv1alpha1.AnnotationQueuedAt, queued.Format(time.RFC3339)).Suspend(true).Obj()
	env.Create(t, job)
	patchJob := client.MergeFrom(job.DeepCopy())
	job.Spec.Suspend = ptr.To(false)
	require.NoError(t, env.Client.Patch(t.Context(), job, patchJob))
	framework.Eventually(t, time.Minute, "the build finished", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(job), job)
		return job.Status.CompletionTime != nil, err
	})
	framework.Eventually(t, 30*time.Second, "the build's times mirrored", func(ctx context.Context) (bool, error) {
		var q, r, f *time.Time
		var ok *bool
		var org, project string
		err := pool.QueryRow(ctx, "SELECT org, project, queued_at, released_at, finished_at, succeeded FROM builds WHERE uid = $1", string(job.UID)).
			Scan(&org, &project, &q, &r, &f, &ok)
		if errors.Is(err, pgx.ErrNoRows) || f == nil {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		assert.Equal(t, "mirror", org)
		assert.Equal(t, "api", project)
		assert.True(t, q.Equal(queued), "queued at the annotation's time")
		assert.True(t, r.Equal(job.Status.StartTime.Time), "released when the Job started")
		assert.True(t, f.Equal(job.Status.CompletionTime.Time), "finished when it completed")
		assert.True(t, ok != nil && *ok)
		return true, nil
	})

	require.NoError(t, env.Client.Delete(t.Context(), org))
	framework.Eventually(t, 30*time.Second, "the org's quotas removed with it", func(ctx context.Context) (bool, error) {
		_, _, _, err := quota(ctx)
		return errors.Is(err, pgx.ErrNoRows), nil
	})
}

// A Pod that uses more CPU than it asks for, as metrics.k8s.io reports it,
// is charged for its use in the intervals the meter measured it.
func TestMeterChargesMeasuredUseAboveTheRequest(t *testing.T) {
	env := framework.Cluster(t)
	pool, dsn := migrated(t)
	meter := startMeter(t, env, dsn)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("berth-meter's log ends:\n%s", meter.Tail(40))
		}
	})
	ns := env.Namespace(t, "acme")
	nodes, err := env.NodesByPool(t.Context())
	require.NoError(t, err)

	pod := testutil.Pod("busy").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).User("ana").
		Resource(corev1.ResourceCPU, "1").Resource(corev1.ResourceMemory, "2Gi").
		Annotation("kwok.x-k8s.io/usage-cpu", "3").NodeName(nodes["spot-ssd"][0].Name).Obj()
	pod.Finalizers = []string{hold}
	require.NoError(t, env.Client.Create(t.Context(), pod))
	// metrics-server has a sample of a new Pod after two of its scrapes.
	framework.Eventually(t, 4*time.Minute, "two intervals charged with the use measured", func(ctx context.Context) (bool, error) {
		var n int
		err := pool.QueryRow(ctx, "SELECT count(*) FROM usage_intervals WHERE uid = $1 AND cpu_used_cores > 2.9", pod.UID).Scan(&n)
		return n >= 2, err
	})
	require.NoError(t, env.Client.Delete(t.Context(), pod))
	settle(t, env, []*corev1.Pod{pod})

	// kwok reports the annotation's 3 cores, and metrics-server a hair
	// more: the rows keep what was measured.
	var secs, cpu, measuredSecs, measuredCPU, used float64
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT sum(running_seconds), sum(cpu_core_seconds),
		coalesce(sum(running_seconds) FILTER (WHERE cpu_used_cores IS NOT NULL), 0), coalesce(sum(cpu_core_seconds) FILTER (WHERE cpu_used_cores IS NOT NULL), 0),
		coalesce(sum(cpu_used_cores * running_seconds), 0)
		FROM usage_intervals WHERE uid = $1`, pod.UID).Scan(&secs, &cpu, &measuredSecs, &measuredCPU, &used))
	t.Logf("ran %.1f s, %.1f s of it in measured intervals; charged %.1f core-seconds", secs, measuredSecs, cpu)
	assert.Greater(t, measuredSecs, 0.0)
	assert.InDelta(t, used, measuredCPU, 1e-6, "measured intervals: the use, about 3 cores, over the 1 asked for")
	assert.InDelta(t, 3*measuredSecs, measuredCPU, 0.01*measuredSecs)
	assert.InDelta(t, 1*(secs-measuredSecs), cpu-measuredCPU, 1e-6, "the others: the request")
}
