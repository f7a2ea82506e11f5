// Package store opens berth's PostgreSQL database and keeps its schema
// current. The schema is a list of numbered SQL files embedded in the
// binary; Migrate applies the missing ones in order, under an advisory lock,
// so that replicas starting together never race.
package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// EnvDatabaseURL is the environment variable Open reads when no DSN is given.
// The chart sets it from a Secret.
const EnvDatabaseURL = "BERTH_DATABASE_URL"

// undefinedTable is PostgreSQL's SQLSTATE for a missing table.
const undefinedTable = "42P01"

// migrateLock is the advisory lock key Migrate holds: "berth" in ASCII.
const migrateLock int64 = 0x6265727468

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the embedded migrations in order. A file is named
// NNNN_name.sql; the numbers start at 1 and have no gaps.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name it NNNN_name.sql", e.Name())
		}
		data, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(data)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i, m := range out {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %04d_%s: expected version %d; versions start at 1 with no gaps or repeats", m.Version, m.Name, i+1)
		}
	}
	return out, nil
}

// DSN returns dsn, or the value of $BERTH_DATABASE_URL when dsn is empty, or
// the contents of the file named by $BERTH_DATABASE_URL_FILE (a mounted
// Secret). TLS is set in the DSN itself: sslmode, sslrootcert, sslcert and
// sslkey, as libpq reads them.
func DSN(dsn string) (string, error) {
	if dsn != "" {
		return dsn, nil
	}
	if v := os.Getenv(EnvDatabaseURL); v != "" {
		return v, nil
	}
	if f := os.Getenv(EnvDatabaseURL + "_FILE"); f != "" {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("%s_FILE: %w", EnvDatabaseURL, err)
		}
		return strings.TrimSpace(string(data)), nil
	}
	return "", fmt.Errorf("no database: pass --database-url, or set %s (or %s_FILE, a file holding it) to a DSN such as postgres://berth@db:5432/berth?sslmode=verify-full", EnvDatabaseURL, EnvDatabaseURL)
}

// Open connects a pool to dsn and checks that the server answers.
func Open(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors may quote the DSN, password included.
		return nil, errors.New("the database URL does not parse; use postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=verify-full")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("reach the database at %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}

// Migrate applies the migrations the database lacks, each in its own
// transaction, and returns the versions it applied. It holds a session
// advisory lock throughout, so a second caller waits and then finds nothing
// to do.
func Migrate(ctx context.Context, pool *pgxpool.Pool) ([]int, error) {
	all, err := Migrations()
	if err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLock); err != nil {
		return nil, fmt.Errorf("take the migration lock: %w", err)
	}
	// Unlock on a fresh context: the caller's may be cancelled by now. A
	// failed unlock ends with the session when the connection is dropped.
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrateLock); err != nil {
			_ = conn.Conn().Close(context.WithoutCancel(ctx)) // the session's end releases the lock
		}
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, err
	}
	var current int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&current); err != nil {
		return nil, err
	}
	if current > len(all) {
		return nil, fmt.Errorf("the database's schema is version %d, newer than this binary's %d; run a berth release at least as new as the one that migrated it", current, len(all))
	}
	var applied []int
	for _, m := range all[current:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
		}
		applied = append(applied, m.Version)
	}
	return applied, nil
}

// Version returns the schema version the database is at, 0 when none.
func Version(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	var v int
	err := pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&v)
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == undefinedTable {
		return 0, nil
	}
	return v, err
}
