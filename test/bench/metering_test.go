package bench

import (
	"context"
	"fmt"
	"os"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"berth.dev/berth/pkg/metering"
	"berth.dev/berth/pkg/store"
	"berth.dev/berth/test/framework"
)

const (
	// ingestRows are the rows of one round: 500 Pods of 100 intervals.
	ingestPods, ingestIntervals = 500, 100
	ingestRounds                = 5
	// targetIngestRows is the exactly-once path's floor in rows a second.
	targetIngestRows = 10_000
)

// BenchmarkMeterIngest writes usage rows into PostgreSQL three ways, in
// alternating order each round, into the same table:
//   - copy: a bare CopyFrom of new rows, the floor of any bulk write;
//   - berth: metering.Write of new rows, berth's exactly-once path (stage
//     with CopyFrom, then one INSERT ... ON CONFLICT);
//   - berth-replay: metering.Write of the same rows again, as a restarted
//     meter does: every row conflicts and is rewritten.
//
// It reports each path's median rows a second and berth's ratio to copy.
func BenchmarkMeterIngest(b *testing.B) {
	pool := meterDB(b)
	paths := []string{"copy", "berth", "berth-replay"}
	rate := map[string][]float64{}
	var ratios []float64
	batch := 0
	// last are the rows berth wrote most recently, which berth-replay
	// writes again.
	var last []metering.Row
	for round := range ingestRounds {
		took := map[string]time.Duration{}
		for i := range paths {
			p := paths[(i+round)%len(paths)]
			rows := last
			if p != "berth-replay" || rows == nil {
				batch++
				rows = ingestBatch(batch)
			}
			start := time.Now()
			if err := ingest(b.Context(), pool, p, rows); err != nil {
				b.Fatalf("%s: %v", p, err)
			}
			took[p] = time.Since(start)
			if p == "berth" {
				last = rows
			}
			rate[p] = append(rate[p], float64(len(rows))/took[p].Seconds())
		}
		ratios = append(ratios, took["copy"].Seconds()/took["berth"].Seconds())
	}

	n := ingestPods * ingestIntervals
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "    path\trows/s (median of %d rounds of %d rows)\tper round\n", ingestRounds, n)
	for _, p := range paths {
		fmt.Fprintf(tw, "    %s\t%.0f\t%.0f\n", p, framework.Median(rate[p]), rate[p])
		b.ReportMetric(framework.Median(rate[p]), "rows/s-"+p)
	}
	_ = tw.Flush()
	r := framework.Median(ratios)
	b.ReportMetric(r, "ratio-berth-to-copy")
	berth := framework.Median(rate["berth"])
	logf("berth's exactly-once path: %.0f rows/s, %.2fx bare CopyFrom (median of per-round ratios); target >= %d rows/s: %s",
		berth, r, targetIngestRows, metOrMissed(berth >= targetIngestRows))
}

// meterDB is a pool on a new database with berth's schema, closed when the
// benchmark ends.
func meterDB(b *testing.B) *pgxpool.Pool {
	pool, err := store.Open(b.Context(), framework.PostgresServer(b).Database(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	if _, err := store.Migrate(b.Context(), pool); err != nil {
		b.Fatal(err)
	}
	return pool
}

// ingestBatch is one round's rows: new Pod UIDs for each batch number.
func ingestBatch(batch int) []metering.Row {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	rows := make([]metering.Row, 0, ingestPods*ingestIntervals)
	for p := range ingestPods {
		uid := fmt.Sprintf("%08x-0000-4000-8000-%012x", batch, p)
		for i := range ingestIntervals {
			rows = append(rows, metering.Row{
				UID: uid, IntervalStart: t0.Add(time.Duration(i) * time.Minute), IntervalSeconds: 60,
				Org: fmt.Sprintf("org-%d", p%10), Namespace: "ns", Name: fmt.Sprintf("pod-%d", p), Class: "workspace",
				User: fmt.Sprintf("user-%d", p%500), Node: "node-1", Pool: "spot-ssd", Spot: true,
				RunningSeconds: 60, CPUCoreSeconds: 90, MemoryGiBSeconds: 240, CostDollars: 0.0004,
			})
		}
	}
	return rows
}

func ingest(ctx context.Context, pool *pgxpool.Pool, path string, rows []metering.Row) error {
	if path == "copy" {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := metering.CopyRows(ctx, tx, rows)
			return err
		})
	}
	return metering.Write(ctx, pool, rows)
}

const (
	// The usage query's data: queryOrgs orgs of queryUsers users each, every
	// user with one workspace running queryHours hours a day, for queryDays.
	queryOrgs, queryUsers, queryDays, queryHours = 3, 500, 30, 10
	queryRuns                                    = 200
	targetQueryP95                               = 200 * time.Millisecond
)

// BenchmarkUsageQuery times metering.Totals, the usage API's query, over 30
// days of 500 users in one org (with two more orgs of the same size beside
// it): by user, workspace, project and class, over the whole 30 days and
// over random weeks. It reports p50 and p95, beside a bare round trip
// (SELECT 1) on the same pool as the floor.
func BenchmarkUsageQuery(b *testing.B) {
	pool := meterDB(b)
	end := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	start := end.Add(-queryDays * 24 * time.Hour)
	var rows [][]any
	for o := range queryOrgs {
		for u := range queryUsers {
			uid := fmt.Sprintf("%08x-0000-4000-8000-%012x", o, u)
			for d := range queryDays {
				for h := range queryHours {
					hour := start.Add(time.Duration(d)*24*time.Hour + time.Duration(8+h)*time.Hour)
					rows = append(rows, []any{uid, hour, fmt.Sprintf("org-%d", o), "workspace", fmt.Sprintf("user-%d", u),
						fmt.Sprintf("ws-%d", u), fmt.Sprintf("project-%d", u%20), "spot-ssd", u%4 != 0,
						3600.0, 5400.0, 14400.0, 0.0, 0.0, 20.0, int64(0), int64(0), 0.0234})
				}
			}
		}
	}
	cols := []string{"uid", "hour", "org", "class", "user_name", "workspace", "project", "pool", "spot",
		"running_seconds", "cpu_core_seconds", "memory_gib_seconds", "gpu_seconds", "scratch_gib_hours", "volume_gib_hours",
		"prompt_tokens", "generation_tokens", "cost_dollars"}
	if _, err := pool.CopyFrom(b.Context(), pgx.Identifier{"usage_hourly"}, cols, pgx.CopyFromRows(rows)); err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(b.Context(), "ANALYZE usage_hourly"); err != nil {
		b.Fatal(err)
	}

	bys := []string{"user", "workspace", "project", "class"}
	var query, floor []time.Duration
	for i := range queryRuns {
		q := metering.UsageQuery{Org: "org-1", By: bys[i%len(bys)], Since: start, Until: end}
		if i%2 == 1 {
			q.Since = start.Add(time.Duration(i%23) * 24 * time.Hour)
			q.Until = q.Since.Add(7 * 24 * time.Hour)
		}
		t0 := time.Now()
		totals, err := metering.Totals(b.Context(), pool, q)
		if err != nil {
			b.Fatal(err)
		}
		query = append(query, time.Since(t0))
		if len(totals) == 0 {
			b.Fatalf("query %+v found nothing", q)
		}
		t0 = time.Now()
		if _, err := pool.Exec(b.Context(), "SELECT 1"); err != nil {
			b.Fatal(err)
		}
		floor = append(floor, time.Since(t0))
	}
	p95 := framework.Percentile(query, 95)
	logf("usage query over %d hourly rows (%d orgs x %d users x %d days x %d h), %d queries:", len(rows), queryOrgs, queryUsers, queryDays, queryHours, queryRuns)
	logf("  Totals:   p50 %.1f ms, p95 %.1f ms; target p95 < %s: %s", ms(framework.Percentile(query, 50)), ms(p95), targetQueryP95, metOrMissed(p95 < targetQueryP95))
	logf("  SELECT 1: p50 %.2f ms, p95 %.2f ms (the floor)", ms(framework.Percentile(floor, 50)), ms(framework.Percentile(floor, 95)))
	b.ReportMetric(ms(p95), "p95-ms-query")
	b.ReportMetric(ms(framework.Percentile(query, 50)), "p50-ms-query")
}
