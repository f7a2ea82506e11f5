// Command berth-meter owns berth's PostgreSQL database: its schema, the
// usage it records and the audit log.
//
//	berth-meter run                         meter labelled Pods (migrates first)
//	berth-meter migrate                     apply the schema's missing migrations
//	berth-meter audit verify --org ORG      check ORG's audit chain
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"

	"berth.dev/berth/pkg/audit"
	"berth.dev/berth/pkg/store"
)

const usage = `usage:
  berth-meter run [--database-url URL] [--prices FILE] [--interval 1m] [--leader-elect] ...
  berth-meter migrate [--database-url URL]
  berth-meter audit verify --org ORG --audit-keys DIR [--database-url URL]

The database URL defaults to $BERTH_DATABASE_URL, or the file named by
$BERTH_DATABASE_URL_FILE.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := run(ctx, os.Args[1:], os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "berth-meter: %v\n", err)
	}
	if code == 2 {
		fmt.Fprint(os.Stderr, usage)
	}
	os.Exit(code)
}

// errUsage is a command line berth-meter does not understand.
var errUsage = errors.New("a command line berth-meter does not understand")

// run runs one subcommand. It returns 1 when the command fails, 2 for a bad
// command line, and 3 when an audit chain does not verify.
func run(ctx context.Context, args []string, out io.Writer) (int, error) {
	switch {
	case len(args) >= 1 && args[0] == "run":
		return exit(runMeter(ctx, args[1:]))
	case len(args) >= 1 && args[0] == "migrate":
		return exit(migrate(ctx, args[1:], out))
	case len(args) >= 2 && args[0] == "audit" && args[1] == "verify":
		return verify(ctx, args[2:], out)
	}
	return 2, errUsage
}

func exit(err error) (int, error) {
	if errors.Is(err, errUsage) {
		return 2, err
	}
	if err != nil {
		return 1, err
	}
	return 0, nil
}

func migrate(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	url := fs.String("database-url", "", "PostgreSQL DSN (default $BERTH_DATABASE_URL)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	db, err := openDB(ctx, *url)
	if err != nil {
		return err
	}
	defer db.Close()
	applied, err := store.Migrate(ctx, db)
	if err != nil {
		return err
	}
	v, err := store.Version(ctx, db)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "schema at version %d; applied %d migration(s) now: %v\n", v, len(applied), applied)
	return nil
}

func verify(ctx context.Context, args []string, out io.Writer) (int, error) {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	url := fs.String("database-url", "", "PostgreSQL DSN (default $BERTH_DATABASE_URL)")
	org := fs.String("org", "", "the org whose chain to verify")
	keys := fs.String("audit-keys", "", "directory of HMAC keys, one file per key id (the mounted Secret)")
	if err := fs.Parse(args); err != nil {
		return 2, errUsage
	}
	if *org == "" || *keys == "" {
		return 2, errors.New("audit verify needs --org and --audit-keys")
	}
	ring, err := audit.LoadKeyring(*keys, "")
	if err != nil {
		return 1, err
	}
	db, err := openDB(ctx, *url)
	if err != nil {
		return 1, err
	}
	defer db.Close()
	rep, err := (&audit.Log{DB: db, Keys: ring}).Verify(ctx, *org)
	if err != nil {
		return 1, err
	}
	fmt.Fprintln(out, rep.API())
	if rep.Broken != nil {
		return 3, nil
	}
	return 0, nil
}

func openDB(ctx context.Context, url string) (*pgxpool.Pool, error) {
	dsn, err := store.DSN(url)
	if err != nil {
		return nil, err
	}
	return store.Open(ctx, dsn)
}
