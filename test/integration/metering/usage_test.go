package metering

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"berth.dev/berth/pkg/metering"
)

// truth is the usage of a scripted set of Pods, summed by hand.
type truth struct {
	seconds, cpu, gpu, cost float64
}

// scriptedPods are Pods whose runs cross interval edges, start before and
// end after the metered window, and never start.
func scriptedPods(t0 time.Time) ([]metering.Pod, truth) {
	pods := []metering.Pod{
		{UID: "00000000-0000-0000-0000-000000000001", Org: "acme", Class: "workspace", User: "ana", Namespace: "acme-dev", Name: "ws-ana",
			Start: t0.Add(7 * time.Second), End: t0.Add(5*time.Minute + 31*time.Second), CPU: 2, NodeShare: 0.125, NodePrice: 0.8, Pool: "spot-ssd", Spot: true},
		{UID: "00000000-0000-0000-0000-000000000002", Org: "acme", Class: "build", User: "bo", Namespace: "acme-ci", Name: "build-1",
			Start: t0.Add(61 * time.Second), End: t0.Add(2*time.Minute + 45*time.Second), CPU: 1.5, NodeShare: 0.1, NodePrice: 0.8, Pool: "spot-ssd", Spot: true},
		{UID: "00000000-0000-0000-0000-000000000003", Org: "globex", Class: "inference", User: "cy", Namespace: "globex-ml", Name: "vllm-0",
			Start: t0.Add(-time.Hour), CPU: 4, GPU: 2, NodeShare: 0.5, NodePrice: 3.6, Pool: "gpu"},
		{UID: "00000000-0000-0000-0000-000000000004", Org: "globex", Class: "workspace", Namespace: "globex-dev", Name: "pending", CPU: 1},
	}
	// The window is [t0, t0+6m): vllm-0 runs all of it.
	run := []float64{324, 104, 360, 0}
	var tr truth
	for i, p := range pods {
		tr.seconds += run[i]
		tr.cpu += p.CPU * run[i]
		tr.gpu += p.GPU * run[i]
		tr.cost += p.NodePrice * p.NodeShare * run[i] / 3600
	}
	return pods, tr
}

// totals sums usage_intervals. It also checks that the hourly sums the
// usage API reads agree with them.
func totals(t *testing.T, pool *pgxpool.Pool) truth {
	t.Helper()
	var tr truth
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT coalesce(sum(running_seconds), 0), coalesce(sum(cpu_core_seconds), 0),
		coalesce(sum(gpu_seconds), 0), coalesce(sum(cost_dollars), 0) FROM usage_intervals`).Scan(&tr.seconds, &tr.cpu, &tr.gpu, &tr.cost))
	var hr truth
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT coalesce(sum(running_seconds), 0), coalesce(sum(cpu_core_seconds), 0),
		coalesce(sum(gpu_seconds), 0), coalesce(sum(cost_dollars), 0) FROM usage_hourly`).Scan(&hr.seconds, &hr.cpu, &hr.gpu, &hr.cost))
	assert.InDelta(t, tr.seconds, hr.seconds, 1e-6, "the hourly sums agree with the intervals")
	assert.InDelta(t, tr.cpu, hr.cpu, 1e-6, "the hourly sums agree with the intervals")
	assert.InDelta(t, tr.cost, hr.cost, 1e-9, "the hourly sums agree with the intervals")
	return tr
}

func assertTruth(t *testing.T, want, got truth, msg string) {
	t.Helper()
	assert.InDelta(t, want.seconds, got.seconds, 1e-6, "%s: running seconds", msg)
	assert.InDelta(t, want.cpu, got.cpu, 1e-6, "%s: core-seconds", msg)
	assert.InDelta(t, want.gpu, got.gpu, 1e-6, "%s: GPU-seconds", msg)
	assert.InDelta(t, want.cost, got.cost, 1e-9, "%s: dollars", msg)
}

// A meter that writes every few seconds, learns of ends late, repeats
// batches, writes them out of order and lets a stale batch arrive last
// still stores each total exactly once.
func TestUsageTotalsSurviveReplaysAndStaleWrites(t *testing.T) {
	pool, _ := migrated(t)
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	end := t0.Add(6 * time.Minute)
	pods, want := scriptedPods(t0)

	// A meter's ticks every 13 s, each writing the intervals it has seen
	// since the last tick's interval began: open intervals are rewritten
	// as they fill. It learns that a Pod ended 20 s late, and charges it
	// as running until then, build-1 into the next interval; End then
	// corrects the overcharge.
	const lag = 20 * time.Second
	var batches [][]metering.Row
	ended := map[string]bool{}
	for now := t0.Add(13 * time.Second); ; now = now.Add(13 * time.Second) {
		if now.After(end) {
			now = end
		}
		// The meter started at t0: nothing before it is written.
		from := now.Add(-13 * time.Second).Truncate(time.Minute).Add(-time.Minute)
		if from.Before(t0) {
			from = t0
		}
		var batch []metering.Row
		for _, p := range pods {
			if p.End.IsZero() || now.Before(p.End.Add(lag)) {
				seen := p
				seen.End = time.Time{}
				batch = append(batch, metering.Intervals(seen, from, now, time.Minute, nil)...)
				continue
			}
			if !ended[p.UID] {
				ended[p.UID] = true
				final := metering.Intervals(p, p.End.Truncate(time.Minute), p.End, time.Minute, nil)
				require.NoError(t, metering.Write(t.Context(), pool, batch))
				batches = append(batches, batch)
				batch = nil
				require.NoError(t, metering.End(t.Context(), pool, p.UID, p.End, final))
			}
		}
		require.NoError(t, metering.Write(t.Context(), pool, batch))
		batches = append(batches, batch)
		if !now.Before(end) {
			break
		}
	}
	require.Len(t, ended, 2, "both ended Pods' ends were seen")
	assertTruth(t, want, totals(t, pool), "in order")

	// Replays: every batch again, shuffled, and the first (stalest) last.
	rng := rand.New(rand.NewPCG(1, 2))
	order := rng.Perm(len(batches))
	for _, i := range order {
		require.NoError(t, metering.Write(t.Context(), pool, batches[i]))
	}
	require.NoError(t, metering.Write(t.Context(), pool, batches[0]))
	assertTruth(t, want, totals(t, pool), "after replays")

	// The whole window again, every row twice, as a restarted meter
	// writes it.
	var all []metering.Row
	for _, p := range pods {
		all = append(all, metering.Intervals(p, t0, end, time.Minute, nil)...)
	}
	require.NoError(t, metering.Write(t.Context(), pool, append(all, all...)))
	assertTruth(t, want, totals(t, pool), "after a restart's rewrite")

	var orgs, users int
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT (SELECT count(*) FROM orgs), (SELECT count(*) FROM users)").Scan(&orgs, &users))
	assert.Equal(t, 2, orgs)
	assert.Equal(t, 3, users)

	var spot, onDemand float64
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT coalesce(sum(cost_dollars) FILTER (WHERE spot), 0),
		coalesce(sum(cost_dollars) FILTER (WHERE NOT spot), 0) FROM usage_intervals`).Scan(&spot, &onDemand))
	assert.InDelta(t, 3.6*0.5*360/3600, onDemand, 1e-9, "on-demand cost is reported apart from spot")
	assert.InDelta(t, 0.8*0.125*324/3600+0.8*0.1*104/3600, spot, 1e-9)
}

// Two meters overlapping in a leader handover write the same intervals at
// once; the totals are still exact.
func TestConcurrentMetersWriteEachIntervalOnce(t *testing.T) {
	pool, _ := migrated(t)
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	pods, want := scriptedPods(t0)
	var all []metering.Row
	for _, p := range pods {
		all = append(all, metering.Intervals(p, t0, t0.Add(6*time.Minute), time.Minute, nil)...)
	}
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			rows := append([]metering.Row(nil), all...)
			rand.New(rand.NewPCG(uint64(i), 9)).Shuffle(len(rows), func(a, b int) { rows[a], rows[b] = rows[b], rows[a] })
			errs <- metering.Write(t.Context(), pool, rows)
		}()
	}
	for range 8 {
		err := <-errs
		require.NoError(t, err)
	}
	assertTruth(t, want, totals(t, pool), "8 writers at once")
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT count(*) FROM usage_intervals").Scan(&n))
	assert.Equal(t, len(all), n, fmt.Sprintf("one row per (uid, interval): %d", len(all)))
}

// A measured use is kept by PostgreSQL: the same interval written again
// without a sample (by a restarted meter, which lost its samples) keeps
// the charge, a larger sample raises it, and an end written late, with
// fewer running seconds, charges the measured use for those seconds.
func TestAMeasuredUseSurvivesRewrites(t *testing.T) {
	pool, _ := migrated(t)
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	p := metering.Pod{UID: "00000000-0000-0000-0000-0000000000f1", Org: "acme", Class: "workspace", Start: t0,
		CPU: 1, MemoryGiB: 1, NodeShare: 1.0 / 16, NodePrice: 1.6, AllocCPU: 16, AllocMemoryGiB: 64}
	measured := func(cpu float64) func(time.Time) metering.Usage {
		return func(time.Time) metering.Usage { return metering.Usage{CPU: cpu, MemoryGiB: 0.5, Measured: true} }
	}
	write := func(to time.Time, use func(time.Time) metering.Usage) {
		require.NoError(t, metering.Write(t.Context(), pool, metering.Intervals(p, t0, to, time.Minute, use)))
	}
	charged := func() (cpu, cost float64, used *float64) {
		require.NoError(t, pool.QueryRow(t.Context(), "SELECT cpu_core_seconds, cost_dollars, cpu_used_cores FROM usage_intervals WHERE uid = $1",
			p.UID).Scan(&cpu, &cost, &used))
		return
	}

	write(t0.Add(30*time.Second), measured(3))
	cpu, cost, used := charged()
	assert.InDelta(t, 3*30, cpu, 1e-9)
	assert.InDelta(t, 1.6*3/16*30/3600, cost, 1e-12)
	require.NotNil(t, used)

	write(t0.Add(40*time.Second), nil)
	cpu, cost, _ = charged()
	assert.InDelta(t, 3*40, cpu, 1e-9, "no sample: the stored one still counts, for the longer run")
	assert.InDelta(t, 1.6*3/16*40/3600, cost, 1e-12)

	write(t0.Add(45*time.Second), measured(2))
	cpu, _, _ = charged()
	assert.InDelta(t, 3*45, cpu, 1e-9, "a smaller sample does not lower it")
	write(t0.Add(50*time.Second), measured(5))
	cpu, _, used = charged()
	assert.InDelta(t, 5*50, cpu, 1e-9, "a larger one raises it")
	assert.InDelta(t, 5, *used, 1e-12)

	p.End = t0.Add(20 * time.Second)
	rows := metering.Intervals(p, t0, p.End, time.Minute, nil)
	require.NoError(t, metering.End(t.Context(), pool, p.UID, p.End, rows))
	cpu, cost, _ = charged()
	assert.InDelta(t, 5*20, cpu, 1e-9, "the end seen late: the measured use, for the seconds run")
	assert.InDelta(t, 1.6*5/16*20/3600, cost, 1e-12)
	var hourly float64
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT cpu_core_seconds FROM usage_hourly WHERE uid = $1", p.UID).Scan(&hourly))
	assert.InDelta(t, cpu, hourly, 1e-9, "the hourly sum agrees")
}
