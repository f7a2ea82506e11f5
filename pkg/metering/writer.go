package metering

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// DB is the part of a pgx pool or connection the writer uses.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// columns are usage_intervals' columns in the order rowValues gives them.
var columns = []string{
	"uid", "interval_start", "interval_seconds", "org", "namespace", "name", "class",
	"user_name", "workspace", "project", "node", "pool", "spot",
	"running_seconds", "cpu_core_seconds", "memory_gib_seconds", "gpu_seconds",
	"scratch_gib_hours", "volume_gib_hours", "prompt_tokens", "generation_tokens", "cost_dollars", "final",
	"cpu_used_cores", "memory_used_gib", "node_share", "node_price",
	"prompt_tokens_counter", "generation_tokens_counter",
}

// kept are the columns a rewrite of an interval does not simply replace:
// the largest measurement any meter took in it stays, and the charges it
// drives are worked out again from it, for the rewrite's running seconds.
var kept = map[string]string{
	"cpu_used_cores":     "GREATEST(usage_intervals.cpu_used_cores, EXCLUDED.cpu_used_cores)",
	"memory_used_gib":    "GREATEST(usage_intervals.memory_used_gib, EXCLUDED.memory_used_gib)",
	"node_share":         "GREATEST(usage_intervals.node_share, EXCLUDED.node_share)",
	"cpu_core_seconds":   "GREATEST(EXCLUDED.cpu_core_seconds, coalesce(usage_intervals.cpu_used_cores, 0) * EXCLUDED.running_seconds)",
	"memory_gib_seconds": "GREATEST(EXCLUDED.memory_gib_seconds, coalesce(usage_intervals.memory_used_gib, 0) * EXCLUDED.running_seconds)",
	"cost_dollars":       "EXCLUDED.node_price * GREATEST(usage_intervals.node_share, EXCLUDED.node_share) * EXCLUDED.running_seconds / 3600",
	// Tokens counted only grow within an interval; the counters are the
	// last scrape's, when the write brings one.
	"prompt_tokens":             "GREATEST(usage_intervals.prompt_tokens, EXCLUDED.prompt_tokens)",
	"generation_tokens":         "GREATEST(usage_intervals.generation_tokens, EXCLUDED.generation_tokens)",
	"prompt_tokens_counter":     "coalesce(EXCLUDED.prompt_tokens_counter, usage_intervals.prompt_tokens_counter)",
	"generation_tokens_counter": "coalesce(EXCLUDED.generation_tokens_counter, usage_intervals.generation_tokens_counter)",
}

// upsert moves the staged rows into usage_intervals, in key order, so that
// meters writing the same intervals at once lock them in the same order and
// never deadlock. A staged row replaces the stored one: every column holds
// an absolute value for its interval, but for the measured use, which
// keeps the largest sample any write brought (see kept). Three kinds of row
// are dropped:
//   - any row over a final one: the Pod had ended when that was written;
//   - a row that is not final and covers less of its interval than the
//     stored one: it is stale (written by a meter that has since lost its
//     lease, say, and arriving late);
//   - a row that is not final for a Pod recorded as ended.
var upsert = func() string {
	set := make([]string, 0, len(columns))
	for _, c := range columns[2:] {
		if v, ok := kept[c]; ok {
			set = append(set, fmt.Sprintf("%s = %s", c, v))
			continue
		}
		set = append(set, fmt.Sprintf("%s = EXCLUDED.%s", c, c))
	}
	list := strings.Join(columns, ", ")
	return fmt.Sprintf(`INSERT INTO usage_intervals (%s) SELECT %s FROM usage_stage s
WHERE s.final OR NOT EXISTS (SELECT 1 FROM metered_ends e WHERE e.uid = s.uid)
ORDER BY uid, interval_start
ON CONFLICT (uid, interval_start) DO UPDATE SET %s
WHERE NOT usage_intervals.final AND (EXCLUDED.final OR usage_intervals.running_seconds <= EXCLUDED.running_seconds)`,
		list, list, strings.Join(set, ", "))
}()

// sums are usage_hourly's summed columns.
var sums = []string{
	"running_seconds", "cpu_core_seconds", "memory_gib_seconds", "gpu_seconds",
	"scratch_gib_hours", "volume_gib_hours", "prompt_tokens", "generation_tokens", "cost_dollars",
}

// rollup recomputes usage_hourly for the Pods and hours the staged rows
// touched, from usage_intervals: sums of absolute values, so a rollup done
// twice holds the same. rollupEnd does the same for one Pod's hours from
// the one that holds its end ($1, $2).
var (
	rollup    = rollupOf(`SELECT DISTINCT uid, date_trunc('hour', interval_start, 'UTC') AS hour FROM usage_stage`)
	rollupEnd = rollupOf(`SELECT DISTINCT uid, date_trunc('hour', interval_start, 'UTC') AS hour FROM usage_intervals
		WHERE uid = $1::uuid AND interval_start >= date_trunc('hour', $2::timestamptz, 'UTC')`)
)

func rollupOf(touched string) string {
	sel := make([]string, len(sums))
	set := make([]string, 0, len(sums)+7)
	for i, c := range sums {
		sel[i] = fmt.Sprintf("sum(u.%s)", c)
		set = append(set, fmt.Sprintf("%s = EXCLUDED.%s", c, c))
	}
	for _, c := range []string{"org", "class", "user_name", "workspace", "project", "pool", "spot"} {
		set = append(set, fmt.Sprintf("%s = EXCLUDED.%s", c, c))
	}
	return fmt.Sprintf(`WITH touched AS (%s)
INSERT INTO usage_hourly (uid, hour, org, class, user_name, workspace, project, pool, spot, %s)
SELECT t.uid, t.hour, max(u.org), max(u.class), max(u.user_name), max(u.workspace), max(u.project), max(u.pool), bool_or(u.spot), %s
FROM touched t JOIN usage_intervals u
	ON u.uid = t.uid AND u.interval_start >= t.hour AND u.interval_start < t.hour + interval '1 hour'
GROUP BY t.uid, t.hour
ORDER BY t.uid, t.hour
ON CONFLICT (uid, hour) DO UPDATE SET %s`, touched, strings.Join(sums, ", "), strings.Join(sel, ", "), strings.Join(set, ", "))
}

// Write stores rows exactly once: it copies them into a temporary table and
// moves them into usage_intervals with one INSERT ... ON CONFLICT, in one
// transaction (see upsert for which rows win). Rows with the same key keep
// the last one given. Writing the same rows again never adds to a total, and
// a later version of an open interval replaces the earlier one. The orgs and
// users named are recorded too.
func Write(ctx context.Context, db DB, rows []Row) error {
	rows = lastPerKey(rows)
	if len(rows) == 0 {
		return nil
	}
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return write(ctx, tx, rows) })
}

// End records that the Pod uid ended at end, with its last rows. rows must
// be final and cover every interval from the one holding end back to the
// last interval written while the Pod was taken to run: those may have been
// charged past the end, by a meter that saw the end late. Rows of intervals
// that start at or after end are removed, but for those that hold tokens
// (an inference Pod scraped in the second its delete was truncated from):
// they stay, final, with no running time and nothing else charged.
func End(ctx context.Context, db DB, uid string, end time.Time, rows []Row) error {
	rows = lastPerKey(rows)
	for i := range rows {
		if !rows[i].Final || rows[i].UID != uid {
			return fmt.Errorf("metering: End of Pod %s given a row of Pod %s, final %t; give it the Pod's final rows only", uid, rows[i].UID, rows[i].Final)
		}
	}
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO metered_ends (uid, ended_at) VALUES ($1, $2) ON CONFLICT (uid) DO NOTHING`, uid, end); err != nil {
			return fmt.Errorf("record the end of Pod %s: %w", uid, err)
		}
		if len(rows) > 0 {
			if err := write(ctx, tx, rows); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE usage_intervals SET running_seconds = 0, cpu_core_seconds = 0, memory_gib_seconds = 0,
			gpu_seconds = 0, scratch_gib_hours = 0, volume_gib_hours = 0, cost_dollars = 0, final = true
			WHERE uid = $1 AND interval_start >= $2 AND NOT final AND (prompt_tokens > 0 OR generation_tokens > 0)`, uid, end); err != nil {
			return fmt.Errorf("keep the tokens past the end of Pod %s: %w", uid, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM usage_intervals WHERE uid = $1 AND interval_start >= $2 AND NOT final`, uid, end); err != nil {
			return fmt.Errorf("remove usage past the end of Pod %s: %w", uid, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM usage_hourly WHERE uid = $1 AND hour >= date_trunc('hour', $2::timestamptz, 'UTC')`, uid, end); err != nil {
			return fmt.Errorf("remove hourly usage past the end of Pod %s: %w", uid, err)
		}
		if _, err := tx.Exec(ctx, rollupEnd, uid, end); err != nil {
			return fmt.Errorf("sum the last hours of Pod %s: %w", uid, err)
		}
		return nil
	})
}

func write(ctx context.Context, tx pgx.Tx, rows []Row) error {
	if _, err := tx.Exec(ctx, `CREATE TEMPORARY TABLE usage_stage
		(LIKE usage_intervals INCLUDING DEFAULTS) ON COMMIT DROP`); err != nil {
		return fmt.Errorf("stage usage: %w", err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"usage_stage"}, columns, pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
		return rowValues(&rows[i]), nil
	})); err != nil {
		return fmt.Errorf("copy %d usage rows: %w", len(rows), err)
	}
	for _, q := range []string{
		`INSERT INTO orgs (name) SELECT DISTINCT org FROM usage_stage ORDER BY org ON CONFLICT DO NOTHING`,
		`INSERT INTO users (org, name) SELECT DISTINCT org, user_name FROM usage_stage
			WHERE user_name <> '' ORDER BY org, user_name ON CONFLICT DO NOTHING`,
		upsert,
		rollup,
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("write usage: %w", err)
		}
	}
	return nil
}

// CopyRows is the floor Write is measured against: a bare CopyFrom of rows
// into usage_intervals, which adds to what is there and fails on a key
// already present.
func CopyRows(ctx context.Context, tx pgx.Tx, rows []Row) (int64, error) {
	return tx.CopyFrom(ctx, pgx.Identifier{"usage_intervals"}, columns, pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
		return rowValues(&rows[i]), nil
	}))
}

func rowValues(r *Row) []any {
	return []any{
		r.UID, r.IntervalStart, r.IntervalSeconds, r.Org, r.Namespace, r.Name, r.Class,
		r.User, r.Workspace, r.Project, r.Node, r.Pool, r.Spot,
		r.RunningSeconds, r.CPUCoreSeconds, r.MemoryGiBSeconds, r.GPUSeconds,
		r.ScratchGiBHours, r.VolumeGiBHours, r.PromptTokens, r.GenerationTokens, r.CostDollars, r.Final,
		r.CPUUsedCores, r.MemoryUsedGiB, r.NodeShare, r.NodePrice,
		r.PromptCounter, r.GenerationCounter,
	}
}

// lastPerKey drops all but the last row of each (uid, interval start): one
// INSERT ... ON CONFLICT cannot touch a row twice.
func lastPerKey(rows []Row) []Row {
	type key struct {
		uid   string
		start int64
	}
	at := make(map[key]int, len(rows))
	out := rows[:0:0]
	for _, r := range rows {
		k := key{r.UID, r.IntervalStart.UnixMicro()}
		if i, ok := at[k]; ok {
			out[i] = r
			continue
		}
		at[k] = len(out)
		out = append(out, r)
	}
	return out
}
