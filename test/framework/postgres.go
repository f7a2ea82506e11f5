package framework

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/supervisor"
)

// Postgres is a private PostgreSQL server on 127.0.0.1, with trust auth, in a
// temp dir. It is the system's PostgreSQL (apt's postgresql package).
type Postgres struct {
	// DSN reaches the server's postgres database as the postgres superuser.
	DSN  string
	Port int

	dir    string
	bin    string
	keeper *supervisor.Keeper // reaps the server once it stops
}

// PostgresServer returns the package's PostgreSQL server, starting it on
// first use.
func PostgresServer(t testing.TB) *Postgres {
	t.Helper()
	requireMain(t)
	state.mu.Lock()
	defer state.mu.Unlock()
	if state.postgres == nil && state.postgresErr == nil {
		state.postgres, state.postgresErr = startPostgres(t.Context())
	}
	if state.postgresErr != nil {
		t.Fatalf("framework: start PostgreSQL: %v", state.postgresErr)
	}
	return state.postgres
}

func startPostgres(ctx context.Context) (*Postgres, error) {
	bin, err := localcluster.PostgresBinDir()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(state.dir, "postgres")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// initdb refuses to run as root: run the server as the postgres user.
	if err := localcluster.ChownToPostgres(dir); err != nil {
		return nil, err
	}
	pg := &Postgres{dir: dir, bin: bin}
	if err := pg.run(ctx, "initdb", "-D", pg.data(), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		return nil, err
	}
	onTeardown(pg.stopCommand(), func() { _ = pg.stop(context.Background()) })
	// A port found free may be taken before the server binds it: then
	// the server is started again, on another port.
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		pg.Port, pg.DSN = port, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
		err = pg.serve(ctx)
		if err == nil {
			return pg, nil
		}
		if attempt == 3 || !strings.Contains(err.Error(), "Address already in use") {
			return nil, err
		}
	}
}

// Database creates an empty database for one test on the server and returns
// a DSN that reaches it. Tests that each take their own never see each
// other's rows.
func (p *Postgres) Database(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t_%d_%d", os.Getpid(), dbSeq.Add(1))
	conn, err := pgx.Connect(t.Context(), p.DSN)
	if err != nil {
		t.Fatalf("framework: connect to PostgreSQL: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), "CREATE DATABASE "+name); err != nil {
		t.Fatalf("framework: create database %s: %v", name, err)
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, name)
}

// Stop stops the server at once, as a crash or an outage would: clients'
// connections break. Start brings it back on the same port and data.
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	if err := p.stop(t.Context()); err != nil {
		t.Fatalf("framework: stop PostgreSQL: %v", err)
	}
}

// Start starts a server Stop stopped. It returns an error rather than
// failing the test, so that it can run beside the test, on a timer.
func (p *Postgres) Start(ctx context.Context) error {
	return p.serve(ctx)
}

// serve starts the server on its port and data directory.
func (p *Postgres) serve(ctx context.Context) error {
	conf := strings.Join(localcluster.PostgresArgs(p.Port, p.dir), " ")
	return p.start(ctx, "-D", p.data(), "-l", filepath.Join(p.dir, "server.log"), "-o", conf, "-w", "-t", "60", "start")
}

// dbSeq numbers the databases Database creates.
var dbSeq atomic.Int64

func (p *Postgres) data() string { return filepath.Join(p.dir, "data") }

// run runs a PostgreSQL program, as the postgres user when this is root.
func (p *Postgres) run(ctx context.Context, prog string, args ...string) error {
	name, argv := p.command(prog, args)
	out, err := exec.CommandContext(ctx, name, argv...).CombinedOutput()
	return p.wrap(prog, out, err)
}

// start runs pg_ctl start under a supervisor keeper, which reaps the server
// pg_ctl leaves running once it stops.
func (p *Postgres) start(ctx context.Context, args ...string) error {
	name, argv := p.command("pg_ctl", args)
	keeper, out, err := supervisor.Run(ctx, os.Environ(), name, argv...)
	p.keeper = keeper
	return p.wrap("pg_ctl start", out, err)
}

func (p *Postgres) command(prog string, args []string) (string, []string) {
	return localcluster.AsPostgres(filepath.Join(p.bin, prog), args...)
}

func (p *Postgres) wrap(prog string, out []byte, err error) error {
	if err == nil {
		return nil
	}
	log, _ := os.ReadFile(filepath.Join(p.dir, "server.log"))
	return fmt.Errorf("%s: %w\n%s%s", prog, err, out, log)
}

func (p *Postgres) stop(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(p.data(), "postmaster.pid")); err != nil {
		return nil
	}
	err := p.run(ctx, "pg_ctl", "-D", p.data(), "-m", "immediate", "-w", "stop")
	if p.keeper != nil {
		p.keeper.Wait(10 * time.Second)
	}
	return err
}

func (p *Postgres) stopCommand() string {
	pidFile := filepath.Join(p.data(), "postmaster.pid")
	return fmt.Sprintf("[ -f %[1]s ] && kill -9 $(head -1 %[1]s)", pidFile)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ports, err := localcluster.FreePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}
