package metering

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/ptr"

	"berth.dev/berth/pkg/audit"
	"berth.dev/berth/test/framework"
)

// keyDir writes keys as a mounted Secret holds them: a file per key id.
func keyDir(t *testing.T, ids ...string) string {
	dir := t.TempDir()
	for _, id := range ids {
		require.NoError(t, os.WriteFile(filepath.Join(dir, id), []byte(strings.Repeat(id, 40)), 0o600))
	}
	return dir
}

// appendRows appends n events to org's chain, at one-second steps.
func appendRows(t *testing.T, log *audit.Log, org string, n int) {
	t.Helper()
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 123456789, time.UTC)
	for i := range n {
		_, err := log.Append(t.Context(), audit.Event{
			Org: org, At: t0.Add(time.Duration(i) * time.Second), Actor: "ana", Workspace: "ws-ana",
			Action: "ai.completion", Model: "qwen2.5-coder", TokensIn: int64(100 + i), TokensOut: int64(40 + i),
			Instruction: ptr.To(fmt.Sprintf("refactor the parser, take %d", i)), Response: ptr.To("sure"), Patch: ptr.To("--- a/x.go"),
		})
		require.NoError(t, err)
	}
}

func verify(t *testing.T, log *audit.Log, org string) *audit.Report {
	t.Helper()
	rep, err := log.Verify(t.Context(), org)
	require.NoError(t, err)
	return rep
}

func exec1(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	_, err := pool.Exec(t.Context(), sql, args...)
	require.NoError(t, err)
}

func TestAuditChainNamesTheFirstRowChangedRemovedOrReordered(t *testing.T) {
	pool, dsn := migrated(t)
	dir := keyDir(t, "k1")
	ring, err := audit.LoadKeyring(dir, "")
	require.NoError(t, err)
	log := &audit.Log{DB: pool, Keys: ring}
	appendRows(t, log, "acme", 10)

	// Rotation: k2 joins the Secret and signs new rows; k1's rows still verify.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "k2"), []byte(strings.Repeat("k2", 40)), 0o600))
	ring2, err := audit.LoadKeyring(dir, "")
	require.NoError(t, err)
	require.Equal(t, "k2", ring2.Current)
	log = &audit.Log{DB: pool, Keys: ring2}
	appendRows(t, log, "acme", 10)
	appendRows(t, log, "globex", 3)
	_, err = log.Append(t.Context(), audit.Event{Org: "acme", Actor: audit.Actor, Action: "quota.denied",
		Detail: "org acme: maxWorkspaces 10 reached"})
	require.NoError(t, err)

	rep := verify(t, log, "acme")
	require.Nil(t, rep.Broken)
	assert.EqualValues(t, 21, rep.Rows)
	assert.EqualValues(t, 21, rep.HeadSeq)
	assert.EqualValues(t, 3, verify(t, log, "globex").Rows, "orgs have chains of their own")

	var keyIDs []string
	rows, err := pool.Query(t.Context(), "SELECT DISTINCT key_id FROM audit_logs ORDER BY 1")
	require.NoError(t, err)
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		keyIDs = append(keyIDs, id)
	}
	assert.Equal(t, []string{"k1", "k2"}, keyIDs)

	// Changed: a token count edited by hand, then put back.
	exec1(t, pool, "UPDATE audit_logs SET tokens_out = tokens_out - 30 WHERE org = 'acme' AND seq = 7")
	rep = verify(t, log, "acme")
	require.NotNil(t, rep.Broken)
	assert.EqualValues(t, 7, rep.Broken.Seq)
	assert.Contains(t, rep.Broken.Why, "was changed")
	assert.EqualValues(t, 6, rep.Rows)
	exec1(t, pool, "UPDATE audit_logs SET tokens_out = tokens_out + 30 WHERE org = 'acme' AND seq = 7")
	require.Nil(t, verify(t, log, "acme").Broken)

	// The binary says the same, with its exit code.
	bin := framework.Binary(t, "berth-meter")
	out, err := exec.CommandContext(t.Context(), bin, "audit", "verify", "--org", "acme", "--audit-keys", dir, "--database-url", dsn).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "org acme: 21 rows verified; head row 21")

	// Changed: a time moved by a microsecond.
	exec1(t, pool, "UPDATE audit_logs SET at = at + interval '1 microsecond' WHERE org = 'acme' AND seq = 12")
	rep = verify(t, log, "acme")
	require.NotNil(t, rep.Broken)
	assert.EqualValues(t, 12, rep.Broken.Seq)
	exec1(t, pool, "UPDATE audit_logs SET at = at - interval '1 microsecond' WHERE org = 'acme' AND seq = 12")

	// Reordered: rows 3 and 4 swap places.
	exec1(t, pool, "ALTER TABLE audit_logs DROP CONSTRAINT audit_logs_seq_check")
	exec1(t, pool, "UPDATE audit_logs SET seq = -3 WHERE org = 'acme' AND seq = 3")
	exec1(t, pool, "UPDATE audit_logs SET seq = 3 WHERE org = 'acme' AND seq = 4")
	exec1(t, pool, "UPDATE audit_logs SET seq = 4 WHERE org = 'acme' AND seq = -3")
	rep = verify(t, log, "acme")
	require.NotNil(t, rep.Broken)
	assert.EqualValues(t, 3, rep.Broken.Seq)

	// Removed: row 3 deleted (with the swap, row 4's content is gone now).
	exec1(t, pool, "DELETE FROM audit_logs WHERE org = 'acme' AND seq = 3")
	rep = verify(t, log, "acme")
	require.NotNil(t, rep.Broken)
	assert.EqualValues(t, 3, rep.Broken.Seq)
	assert.Contains(t, rep.Broken.Why, "is missing")

	out, err = exec.CommandContext(t.Context(), bin, "audit", "verify", "--org", "acme", "--audit-keys", dir, "--database-url", dsn).CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "%s", out)
	assert.Equal(t, 3, exit.ExitCode())
	assert.Contains(t, string(out), "org acme: chain broken at row 3: is missing: rows 3 to 3 were removed (2 rows before it verified)")

	// A key taken out of the Secret is named.
	require.NoError(t, os.Remove(filepath.Join(dir, "k1")))
	out, err = exec.CommandContext(t.Context(), bin, "audit", "verify", "--org", "globex", "--audit-keys", dir, "--database-url", dsn).CombinedOutput()
	require.NoError(t, err, "globex's rows are all k2's: %s", out)
	ring3, err := audit.LoadKeyring(dir, "")
	require.NoError(t, err)
	exec1(t, pool, "DELETE FROM audit_logs WHERE org = 'acme'")
	appendRows(t, &audit.Log{DB: pool, Keys: ring}, "acme", 1)
	rep = verify(t, &audit.Log{DB: pool, Keys: ring3}, "acme")
	require.NotNil(t, rep.Broken)
	assert.Contains(t, rep.Broken.Why, `audit key id "k1" is not in the keyring`)
}

// No instruction, response or patch text reaches the database: a dump of
// it holds none of the texts.
func TestAuditKeepsNoText(t *testing.T) {
	pool, dsn := migrated(t)
	ring, err := audit.LoadKeyring(keyDir(t, "k1"), "")
	require.NoError(t, err)
	log := &audit.Log{DB: pool, Keys: ring}
	secrets := []string{"SECRET-INSTRUCTION-7f3a", "SECRET-RESPONSE-19bd", "SECRET-PATCH-c0de"}
	_, err = log.Append(t.Context(), audit.Event{Org: "acme", Actor: "ana", Action: "ai.edit", Model: "m",
		Instruction: &secrets[0], Response: &secrets[1], Patch: &secrets[2]})
	require.NoError(t, err)

	var sum []byte
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT instruction_hmac FROM audit_logs WHERE org = 'acme'").Scan(&sum))
	want, err := ring.TextHMAC("k1", "instruction", secrets[0])
	require.NoError(t, err)
	assert.Equal(t, want, sum, "the text a user holds can be checked against its row")

	dump := pgDump(t, dsn)
	require.Contains(t, dump, "ai.edit", "the dump holds the audit rows")
	for _, s := range secrets {
		assert.NotContains(t, dump, s)
	}
}

// pgDump dumps the database with the server's own pg_dump.
func pgDump(t *testing.T, dsn string) string {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_dump")
	bin := "pg_dump"
	if len(bins) > 0 {
		bin = bins[len(bins)-1]
	}
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(t.Context(), bin, "--data-only", dsn)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	require.NoError(t, cmd.Run(), errOut.String())
	return out.String()
}

// A row from a source berth may see twice is appended once; its source is
// covered by its hash like every other field.
func TestAuditAppendsASourceOnce(t *testing.T) {
	pool, _ := migrated(t)
	ring, err := audit.LoadKeyring(keyDir(t, "k1"), "")
	require.NoError(t, err)
	log := &audit.Log{DB: pool, Keys: ring}
	ev := audit.Event{Org: "acme", Actor: audit.Actor, Action: "BuildReleased", Detail: "build Job acme-dev/b released", Source: "event/u-1/1"}
	first, err := log.Append(t.Context(), ev)
	require.NoError(t, err)
	appendRows(t, log, "acme", 1)
	again, err := log.Append(t.Context(), ev)
	require.NoError(t, err)
	assert.Equal(t, first, again, "the row that holds the source")
	rep := verify(t, log, "acme")
	require.Nil(t, rep.Broken)
	assert.EqualValues(t, 2, rep.Rows)

	exec1(t, pool, "UPDATE audit_logs SET source = 'event/u-2/1' WHERE org = 'acme' AND seq = $1", first)
	rep = verify(t, log, "acme")
	require.NotNil(t, rep.Broken)
	assert.Equal(t, first, rep.Broken.Seq)
	assert.Contains(t, rep.Broken.Why, "was changed")
}
