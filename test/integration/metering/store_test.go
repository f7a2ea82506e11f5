package metering

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"berth.dev/berth/pkg/store"
	"berth.dev/berth/test/framework"
)

// database returns a pool on a new, empty database of the test server.
func database(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	dsn := framework.PostgresServer(t).Database(t)
	pool, err := store.Open(t.Context(), dsn)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool, dsn
}

// migrated returns a pool on a new database with berth's schema.
func migrated(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	pool, dsn := database(t)
	_, err := store.Migrate(t.Context(), pool)
	require.NoError(t, err)
	return pool, dsn
}

func TestMigrationsApplyOnceWhenReplicasStartTogether(t *testing.T) {
	_, dsn := database(t)
	all, err := store.Migrations()
	require.NoError(t, err)

	const replicas = 4
	applied := make([][]int, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() {
			pool, err := store.Open(t.Context(), dsn)
			if err != nil {
				errs[i] = err
				return
			}
			defer pool.Close()
			applied[i], errs[i] = store.Migrate(t.Context(), pool)
		})
	}
	wg.Wait()
	total := 0
	for i := range replicas {
		require.NoError(t, errs[i], "replica %d", i)
		total += len(applied[i])
	}
	assert.Equal(t, len(all), total, "each migration is applied by exactly one replica: %v", applied)

	pool, err := store.Open(t.Context(), dsn)
	require.NoError(t, err)
	defer pool.Close()
	v, err := store.Version(t.Context(), pool)
	require.NoError(t, err)
	assert.Equal(t, len(all), v)
}

func TestMeterMigrateSubcommand(t *testing.T) {
	_, dsn := database(t)
	bin := framework.Binary(t, "berth-meter")

	out, err := exec.CommandContext(t.Context(), bin, "migrate", "--database-url", dsn).CombinedOutput()
	require.NoError(t, err, "%s", out)
	all, err := store.Migrations()
	require.NoError(t, err)
	assert.Contains(t, string(out), fmt.Sprintf("schema at version %d; applied %d migration(s) now", len(all), len(all)))

	cmd := exec.CommandContext(t.Context(), bin, "migrate")
	cmd.Env = append(cmd.Environ(), store.EnvDatabaseURL+"="+dsn)
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "applied 0 migration(s) now", "a second run has nothing to do")

	cmd = exec.CommandContext(t.Context(), bin, "migrate")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err = cmd.CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "no database: pass --database-url, or set BERTH_DATABASE_URL")
}

func TestMigrateRefusesANewerSchema(t *testing.T) {
	pool, _ := migrated(t)
	_, err := pool.Exec(t.Context(), "INSERT INTO schema_migrations (version, name) VALUES (99, 'future')")
	require.NoError(t, err)
	_, err = store.Migrate(context.Background(), pool)
	assert.ErrorContains(t, err, "schema is version 99, newer than this binary's")
}
