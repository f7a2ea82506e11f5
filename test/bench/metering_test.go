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
	pg := framework.PostgresServer(b)
	pool, err := store.Open(b.Context(), pg.Database(b))
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	if _, err := store.Migrate(b.Context(), pool); err != nil {
		b.Fatal(err)
	}
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
		fmt.Fprintf(tw, "    %s\t%.0f\t%.0f\n", p, median(rate[p]), rate[p])
		b.ReportMetric(median(rate[p]), "rows/s-"+p)
	}
	_ = tw.Flush()
	r := median(ratios)
	b.ReportMetric(r, "ratio-berth-to-copy")
	berth := median(rate["berth"])
	logf("berth's exactly-once path: %.0f rows/s, %.2fx bare CopyFrom (median of per-round ratios); target >= %d rows/s: %s",
		berth, r, targetIngestRows, metOrMissed(berth >= targetIngestRows))
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
