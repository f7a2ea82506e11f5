// Package audit keeps berth's tamper-evident audit log in PostgreSQL.
//
// Each org has its own chain. A row holds who did what, when, with which
// model and how many tokens, and, of the text an IDE or a model exchanged,
// only keyed hashes (HMAC-SHA256 with a key id): the text itself never
// reaches the database. Each row also carries the previous row's hash, and
// its own hash is an HMAC over all its fields. Changing, removing or
// reordering a row therefore breaks the chain at that row, and no one
// without the key can mend it. Verify walks a chain and names the first row
// that does not hold.
//
// A chain cannot show that rows were cut from its end: the shortened chain
// is still whole. Verify reports the head (last sequence number and hash) so
// that it can be compared with a copy kept elsewhere.
package audit

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Actor is the actor of berth's own actions: quota denials, build releases,
// idle stops, wakes and spot recoveries.
const Actor = "system:berth"

// Event is one thing to record. The texts are hashed and dropped.
type Event struct {
	Org       string
	At        time.Time
	Actor     string
	Workspace string
	Action    string
	// Detail is berth's own description of its action, such as the limit a
	// denial named. It must hold no text a user or a model wrote.
	Detail              string
	Model               string
	TokensIn, TokensOut int64
	Instruction         *string
	Response            *string
	Patch               *string
	// Source names what the event was taken from, when berth may see it
	// more than once (an Event berth-manager reported, say). An event
	// whose source the org's chain already holds is not appended again.
	Source string
}

// Row is one stored audit row.
type Row struct {
	Org, Actor, Workspace, Action, Detail, Model string
	Seq                                          int64
	At                                           time.Time
	TokensIn, TokensOut                          int64
	InstructionHMAC, ResponseHMAC, PatchHMAC     []byte
	KeyID                                        string
	Source                                       string
	PrevHash, Hash                               []byte
}

// DB is the part of a pgx pool or connection the log uses.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Log appends to and verifies the audit chains.
type Log struct {
	DB   DB
	Keys *Keyring
}

// genesis is the previous hash of each chain's first row.
var genesis = make([]byte, 32)

// Append records ev as the next row of its org's chain and returns the
// row's sequence number. Appends to one org are serialised by a transaction
// advisory lock on the org; orgs do not wait for each other. An event with
// a Source the chain already holds appends nothing, and returns the row
// that holds it.
func (l *Log) Append(ctx context.Context, ev Event) (int64, error) {
	if err := ev.check(); err != nil {
		return 0, err
	}
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	id := l.Keys.Current
	r := Row{
		Org: ev.Org, Actor: ev.Actor, Workspace: ev.Workspace, Action: ev.Action, Detail: ev.Detail,
		Model: ev.Model, TokensIn: ev.TokensIn, TokensOut: ev.TokensOut, KeyID: id, Source: ev.Source,
		// PostgreSQL keeps microseconds; hash what it will give back.
		At: ev.At.UTC().Truncate(time.Microsecond),
	}
	var err error
	for _, t := range []struct {
		field string
		text  *string
		out   *[]byte
	}{{"instruction", ev.Instruction, &r.InstructionHMAC}, {"response", ev.Response, &r.ResponseHMAC}, {"patch", ev.Patch, &r.PatchHMAC}} {
		if t.text == nil {
			continue
		}
		if *t.out, err = l.Keys.TextHMAC(id, t.field, *t.text); err != nil {
			return 0, err
		}
	}
	err = pgx.BeginFunc(ctx, l.DB, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended('berth.dev/audit/' || $1, 0))", r.Org); err != nil {
			return err
		}
		if r.Source != "" {
			err := tx.QueryRow(ctx, "SELECT seq FROM audit_logs WHERE org = $1 AND source = $2", r.Org, r.Source).Scan(&r.Seq)
			if err == nil || !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
		}
		r.Seq, r.PrevHash = 1, genesis
		err := tx.QueryRow(ctx, "SELECT seq + 1, hash FROM audit_logs WHERE org = $1 ORDER BY seq DESC LIMIT 1", r.Org).Scan(&r.Seq, &r.PrevHash)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if r.Hash, err = l.Keys.mac(id, r.fields()...); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO audit_logs (org, seq, at, actor, workspace, action, detail, model,
			tokens_in, tokens_out, instruction_hmac, response_hmac, patch_hmac, key_id, source, prev_hash, hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NULLIF($15, ''), $16, $17)`,
			r.Org, r.Seq, r.At, r.Actor, r.Workspace, r.Action, r.Detail, r.Model,
			r.TokensIn, r.TokensOut, r.InstructionHMAC, r.ResponseHMAC, r.PatchHMAC, r.KeyID, r.Source, r.PrevHash, r.Hash)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("append to the audit log of org %s: %w", ev.Org, err)
	}
	return r.Seq, nil
}

func (ev *Event) check() error {
	for _, f := range []struct{ name, v string }{{"org", ev.Org}, {"actor", ev.Actor}, {"action", ev.Action}} {
		if f.v == "" {
			return fmt.Errorf("audit event: %s is empty; every row names its org, actor and action", f.name)
		}
	}
	if ev.TokensIn < 0 || ev.TokensOut < 0 {
		return fmt.Errorf("audit event: tokens %d in, %d out; token counts are 0 or more", ev.TokensIn, ev.TokensOut)
	}
	return nil
}

// fields are what a row's hash covers, in a fixed order. The source comes
// last, and only when there is one, so rows written before sources existed
// verify as they did.
func (r *Row) fields() [][]byte {
	num := func(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }
	f := [][]byte{
		[]byte(r.Org), num(r.Seq), num(r.At.UnixMicro()), []byte(r.Actor), []byte(r.Workspace),
		[]byte(r.Action), []byte(r.Detail), []byte(r.Model), num(r.TokensIn), num(r.TokensOut),
		r.InstructionHMAC, r.ResponseHMAC, r.PatchHMAC, []byte(r.KeyID), r.PrevHash,
	}
	if r.Source != "" {
		f = append(f, []byte(r.Source))
	}
	return f
}

// Report is the outcome of verifying one org's chain.
type Report struct {
	Org string
	// Rows counts the rows that verified, from the first.
	Rows int64
	// HeadSeq and HeadHash are the last verified row's.
	HeadSeq  int64
	HeadHash []byte
	// Broken names the first row that does not hold; nil when all do.
	Broken *Break
}

// Break is where a chain stops holding.
type Break struct {
	Seq int64
	Why string
}

func (b *Break) Error() string { return "row " + strconv.FormatInt(b.Seq, 10) + ": " + b.Why }

// Verify recomputes org's chain from its first row and reports the first
// row that was changed, removed or reordered.
func (l *Log) Verify(ctx context.Context, org string) (*Report, error) {
	rows, err := l.DB.Query(ctx, `SELECT org, seq, at, actor, workspace, action, detail, model, tokens_in, tokens_out,
		instruction_hmac, response_hmac, patch_hmac, key_id, coalesce(source, ''), prev_hash, hash
		FROM audit_logs WHERE org = $1 ORDER BY seq`, org)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	rep := &Report{Org: org, HeadHash: genesis}
	for rows.Next() {
		var r Row
		if err := rows.Scan(&r.Org, &r.Seq, &r.At, &r.Actor, &r.Workspace, &r.Action, &r.Detail, &r.Model,
			&r.TokensIn, &r.TokensOut, &r.InstructionHMAC, &r.ResponseHMAC, &r.PatchHMAC, &r.KeyID, &r.Source, &r.PrevHash, &r.Hash); err != nil {
			return nil, err
		}
		if b := l.check(&r, rep); b != nil {
			rep.Broken = b
			return rep, nil
		}
		rep.Rows++
		rep.HeadSeq, rep.HeadHash = r.Seq, r.Hash
	}
	return rep, rows.Err()
}

// check returns why r does not follow the verified chain in rep, or nil.
func (l *Log) check(r *Row, rep *Report) *Break {
	want := rep.HeadSeq + 1
	switch {
	case r.Seq > want:
		return &Break{Seq: want, Why: fmt.Sprintf("is missing: rows %d to %d were removed", want, r.Seq-1)}
	case r.Seq < want:
		return &Break{Seq: r.Seq, Why: "appears twice"}
	}
	sum, err := l.Keys.mac(r.KeyID, r.fields()...)
	if err != nil {
		return &Break{Seq: r.Seq, Why: err.Error()}
	}
	if !bytes.Equal(sum, r.Hash) {
		return &Break{Seq: r.Seq, Why: "was changed: its hash does not match its fields"}
	}
	if !bytes.Equal(r.PrevHash, rep.HeadHash) {
		return &Break{Seq: r.Seq, Why: fmt.Sprintf("does not follow row %d: rows were removed or reordered", rep.HeadSeq)}
	}
	return nil
}

// TextHMAC is the hash an instruction, response or patch is stored as,
// under key id: for checking that a text a user holds is the one recorded.
func (k *Keyring) TextHMAC(id, field, text string) ([]byte, error) {
	return k.mac(id, []byte("berth.dev/audit/"+field), []byte(text))
}
