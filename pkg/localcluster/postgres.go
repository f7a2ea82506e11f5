package localcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresBinDir finds the system's PostgreSQL programs (initdb, postgres,
// pg_ctl): $BERTH_PG_BINDIR, else the newest /usr/lib/postgresql/*/bin, else
// pg_config --bindir.
func PostgresBinDir() (string, error) {
	if d := os.Getenv("BERTH_PG_BINDIR"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	major := func(dir string) int { n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir))); return n }
	sort.Slice(dirs, func(i, j int) bool { return major(dirs[i]) > major(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		return strings.TrimSpace(string(out)), nil
	}
	return "", fmt.Errorf("no PostgreSQL server found; install it (apt-get install postgresql) or set BERTH_PG_BINDIR")
}

// PostgresArgs are the server settings of a private, throwaway PostgreSQL:
// 127.0.0.1 only, on port, its socket in dir, nothing flushed to disk. A
// commit is still written to the kernel before it is acknowledged
// (synchronous_commit stays on): a server killed at once, as the outage
// tests kill it, keeps every commit it acknowledged, as a real one does.
// Only a crash of the machine would lose them.
func PostgresArgs(port int, dir string) []string {
	return []string{"-c", "listen_addresses=127.0.0.1", "-p", strconv.Itoa(port), "-c", "unix_socket_directories=" + dir,
		"-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200"}
}

// AsPostgres returns the command line that runs a PostgreSQL program as the
// postgres user when this process is root (initdb and postgres refuse root):
// setpriv execs the program in place, so its pid is the program's.
func AsPostgres(prog string, args ...string) (string, []string) {
	if os.Geteuid() != 0 {
		return prog, args
	}
	return "setpriv", append([]string{"--reuid=postgres", "--regid=postgres", "--init-groups", "--", prog}, args...)
}

// ChownToPostgres gives dir to the postgres user when this process is root.
func ChownToPostgres(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("running as root needs a postgres user to run PostgreSQL as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(dir, uid, gid)
}

// StartPostgres starts a private PostgreSQL beside the cluster, as one of
// its components (Delete stops it), with trust auth on 127.0.0.1, and
// returns a DSN of its postgres database. A server already running is
// reused.
func (c *Cluster) StartPostgres(ctx context.Context) (string, error) {
	dir := c.postgresDir()
	portFile := filepath.Join(dir, "port")
	if b, err := os.ReadFile(portFile); err == nil {
		if pid, err := c.PID("postgres"); err == nil && pid > 0 {
			dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%s/postgres?sslmode=disable", strings.TrimSpace(string(b)))
			if ping(ctx, dsn) == nil {
				return dsn, nil
			}
		}
	}
	bin, err := PostgresBinDir()
	if err != nil {
		return "", err
	}
	ports, err := FreePorts(1)
	if err != nil {
		return "", err
	}
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := ChownToPostgres(dir); err != nil {
		return "", err
	}
	data := filepath.Join(dir, "data")
	name, args := AsPostgres(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("initdb: %w\n%s", err, out)
	}
	name, args = AsPostgres(filepath.Join(bin, "postgres"), append([]string{"-D", data}, PostgresArgs(ports[0], dir)...)...)
	if err := c.StartComponent(ctx, "postgres", name, args...); err != nil {
		return "", err
	}
	if err := os.WriteFile(portFile, []byte(strconv.Itoa(ports[0])), 0o644); err != nil {
		return "", err
	}
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", ports[0])
	deadline := time.Now().Add(time.Minute)
	for {
		err := ping(ctx, dsn)
		if err == nil {
			return dsn, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("PostgreSQL did not start: %w\n%s", err, c.ComponentLog("postgres", 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// postgresDir holds the server's files. It is outside the cluster's folder,
// which may sit where the postgres user cannot reach (root's home); Delete
// removes it.
func (c *Cluster) postgresDir() string {
	return filepath.Join(os.TempDir(), "berth-"+c.Name+"-postgres")
}

func ping(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}
