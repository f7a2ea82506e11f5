// Command berth-blob is a build's data path to Azure Blob Storage. The
// admission webhook injects it into build Pods:
//
//	berth-blob copy-self DEST           copy this binary into a shared volume
//	berth-blob fetch --project P        download and safely unzip the sources
//	berth-blob run --project P -- CMD   run the build, deliver log and results
//	berth-blob sas --project P          print a read-only URL of the result
//
// In a build Pod it holds no storage credential: with --manager-url it asks
// berth-manager for a SAS URL of each blob, proving who it is with the
// Pod's projected ServiceAccount token. Outside berth-manager's care (local
// development, the sas command) it authenticates with a connection string
// ($BERTH_BLOB_CONNECTION_STRING) or with DefaultAzureCredential. It must
// not import Kubernetes libraries; a test checks.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"berth.dev/berth/pkg/blob"
)

const usage = `usage: berth-blob COMMAND [flags]

commands:
  fetch --project P [--dest DIR]           download {uploads}/P/source.zip and unzip it safely
  run --project P [flags] -- CMD [ARGS]    run CMD, upload its log, and its outputs on success
  sas --project P [--blob build/result.zip] [--expiry 1h]
                                           print a read-only URL of one of the project's blobs
                                           (needs the account's credentials, not a build's grants)
  copy-self DEST                           copy this binary to DEST (an init container's job)

Run 'berth-blob COMMAND -h' for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var code int
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "fetch":
		err = fetch(ctx, args)
	case "run":
		code, err = run(ctx, args)
	case "sas":
		err = sas(ctx, args)
	case "copy-self":
		err = copySelf(args)
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "berth-blob: unknown command %q\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "berth-blob: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// common are the flags every blob command takes.
type common struct {
	project          string
	managerURL       string
	tokenFile        string
	managerCAFile    string
	accountURL       string
	connectionString string
	blockSize        int64
	concurrency      int
	retries          int
	retryDelay       time.Duration
	progress         time.Duration
	verbosity        int
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.project, "project", os.Getenv("BERTH_PROJECT"), "the build's project id (the berth.dev/project label) [$BERTH_PROJECT]")
	fs.StringVar(&c.managerURL, "manager-url", os.Getenv("BERTH_BLOB_MANAGER_URL"), "berth-manager's URL: ask it for a SAS URL of each blob, with the Pod's token, and hold no storage credential [$BERTH_BLOB_MANAGER_URL]")
	fs.StringVar(&c.tokenFile, "token-file", envOr("BERTH_BLOB_TOKEN_FILE", blob.DefaultTokenFile), "the Pod's projected ServiceAccount token, audience "+blob.TokenAudience+", shown to berth-manager [$BERTH_BLOB_TOKEN_FILE]")
	fs.StringVar(&c.managerCAFile, "manager-ca-file", "", "PEM file of the CA berth-manager's certificate is signed by (default $BERTH_BLOB_MANAGER_CA, the PEM itself; else the system's roots)")
	fs.StringVar(&c.accountURL, "account-url", os.Getenv("BERTH_BLOB_ACCOUNT_URL"), "the storage account's blob endpoint, for workload identity [$BERTH_BLOB_ACCOUNT_URL]")
	fs.StringVar(&c.connectionString, "connection-string", "", "a storage connection string, for development (default $BERTH_BLOB_CONNECTION_STRING; the flag shows in ps, the variable does not)")
	fs.Int64Var(&c.blockSize, "block-size", blob.DefaultBlockSize, "upload block size in bytes; memory is about block-size x concurrency")
	fs.IntVar(&c.concurrency, "concurrency", blob.DefaultConcurrency, "blocks uploaded at once")
	fs.IntVar(&c.retries, "retries", envInt("BERTH_BLOB_RETRIES", blob.DefaultBackoff().Attempts), "tries of each transfer, the first included [$BERTH_BLOB_RETRIES]")
	fs.DurationVar(&c.retryDelay, "retry-delay", envDuration("BERTH_BLOB_RETRY_DELAY", blob.DefaultBackoff().Initial), "wait after a failed transfer, doubled after each [$BERTH_BLOB_RETRY_DELAY]")
	fs.DurationVar(&c.progress, "progress-interval", envDuration("BERTH_BLOB_PROGRESS_INTERVAL", blob.DefaultProgressInterval), "how often long transfers log their progress [$BERTH_BLOB_PROGRESS_INTERVAL]")
	fs.IntVar(&c.verbosity, "v", 0, "log verbosity")
}

// store reads and writes blobs: a GrantStore in a build Pod, an
// AzureStore with credentials otherwise.
type store interface {
	blob.Source
	blob.Sink
}

// setup validates the common flags and returns the store and a logging
// context: grants from berth-manager with --manager-url, else the
// account's credentials.
func (c *common) setup(ctx context.Context) (context.Context, store, error) {
	ctx = c.logContext(ctx)
	if err := blob.ValidateProject(c.project); err != nil {
		return ctx, nil, fmt.Errorf("--project: %w", err)
	}
	if c.managerURL == "" {
		s, err := c.azureStore()
		return ctx, s, err
	}
	ca := []byte(os.Getenv("BERTH_BLOB_MANAGER_CA"))
	if c.managerCAFile != "" {
		var err error
		if ca, err = os.ReadFile(c.managerCAFile); err != nil {
			return ctx, nil, fmt.Errorf("--manager-ca-file: %w", err)
		}
	}
	gc, err := blob.NewGrantClient(c.managerURL, c.tokenFile, ca)
	if err != nil {
		return ctx, nil, fmt.Errorf("--manager-url: %w", err)
	}
	return ctx, blob.NewGrantStore(gc, c.storeOptions()), nil
}

func (c *common) logContext(ctx context.Context) context.Context {
	log := logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.Level(-c.verbosity)}))
	return logr.NewContext(ctx, log)
}

func (c *common) storeOptions() blob.StoreOptions {
	return blob.StoreOptions{
		AccountURL: c.accountURL, BlockSize: c.blockSize, Concurrency: c.concurrency,
		MaxRetries: 2, RetryDelay: c.retryDelay / 2, TryTimeout: 2 * time.Minute,
	}
}

// azureStore opens the account with a connection string or workload
// identity.
func (c *common) azureStore() (*blob.AzureStore, error) {
	if c.connectionString == "" {
		c.connectionString = os.Getenv("BERTH_BLOB_CONNECTION_STRING")
	}
	o := c.storeOptions()
	o.ConnectionString = c.connectionString
	return blob.NewAzureStore(o)
}

func (c *common) backoff() blob.Backoff {
	return blob.Backoff{Attempts: c.retries, Initial: c.retryDelay, Max: 8 * c.retryDelay}
}

func fetch(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("fetch", flag.ExitOnError)
	var c common
	c.register(fs)
	container := fs.String("uploads-container", blob.DefaultUploadsContainer, "container of the sources")
	dest := fs.String("dest", "/workspace/src", "directory to unzip the sources into")
	lim := blob.DefaultLimits()
	fs.IntVar(&lim.MaxEntries, "max-entries", lim.MaxEntries, "refuse archives with more entries")
	fs.Int64Var(&lim.MaxTotalBytes, "max-total-bytes", lim.MaxTotalBytes, "refuse archives that unpack to more bytes")
	fs.Int64Var(&lim.MaxFileBytes, "max-file-bytes", lim.MaxFileBytes, "refuse archives with a larger file")
	fs.Int64Var(&lim.MaxRatio, "max-ratio", lim.MaxRatio, "refuse files that inflate more than this many times (above 1 MiB)")
	fs.Int64Var(&lim.MaxTotalRatio, "max-total-ratio", lim.MaxTotalRatio, "refuse archives that inflate more than this many times in total (above 16 MiB)")
	_ = fs.Parse(args)
	ctx, store, err := c.setup(ctx)
	if err != nil {
		return err
	}
	_, err = blob.Fetch(ctx, store, blob.FetchOptions{
		Container: *container, Name: blob.SourceName(c.project), Dest: *dest,
		Limits: lim, Backoff: c.backoff(), ProgressInterval: c.progress,
	})
	return err
}

func run(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var c common
	c.register(fs)
	o := blob.RunOptions{Containers: blob.DefaultContainers()}
	fs.StringVar(&o.Containers.Projects, "projects-container", o.Containers.Projects, "container of logs and results")
	fs.StringVar(&o.Containers.Artifacts, "artifacts-container", o.Containers.Artifacts, "container of versioned artifacts")
	fs.StringVar(&o.OutputsDir, "outputs", envOr("BERTH_OUTPUTS", "/workspace/out"), "directory zipped to build/result.zip on success [$BERTH_OUTPUTS]")
	fs.StringVar(&o.ArtifactsDir, "artifacts", os.Getenv("BERTH_ARTIFACTS"), "directory uploaded to artifacts/{project}/{version}/ on success, with --version [$BERTH_ARTIFACTS]")
	fs.StringVar(&o.Version, "version", os.Getenv("BERTH_VERSION"), "artifacts version [$BERTH_VERSION]")
	fs.StringVar(&o.LogFile, "log-file", envOr("BERTH_LOG_FILE", "/workspace/.berth/build.log"), "file the command's output is kept in [$BERTH_LOG_FILE]")
	fs.Int64Var(&o.SpoolLimit, "spool-limit", blob.DefaultSpoolLimit, "outputs of up to this many bytes are zipped to a file first and sent in one Put Blob; larger ones are zipped as they upload, in blocks; -1 never spools")
	fs.StringVar(&o.SpoolDir, "spool-dir", "", "where the archive is spooled (default the log file's directory)")
	_ = fs.Parse(args)
	ctx, store, err := c.setup(ctx)
	if err != nil {
		return 2, err
	}
	o.Project, o.Backoff, o.ProgressInterval = c.project, c.backoff(), c.progress
	code, err := blob.Run(ctx, store, o, fs.Args())
	if err != nil && code == 0 {
		code = blob.ExitUploadFailed
	}
	return code, err
}

func sas(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("sas", flag.ExitOnError)
	var c common
	c.register(fs)
	container := fs.String("projects-container", blob.DefaultProjectsContainer, "container of the blob")
	rel := fs.String("blob", "build/result.zip", "the blob, relative to the project")
	expiry := fs.Duration("expiry", blob.DefaultSASExpiry, "how long the URL is valid")
	_ = fs.Parse(args)
	ctx = c.logContext(ctx)
	if err := blob.ValidateProject(c.project); err != nil {
		return fmt.Errorf("--project: %w", err)
	}
	store, err := c.azureStore()
	if err != nil {
		return err
	}
	u, err := blob.ReadURL(ctx, store, *container, c.project, *rel, *expiry, time.Now())
	if err != nil {
		return err
	}
	fmt.Println(u)
	return nil
}

// copySelf copies this binary to DEST, through a temp file and a rename, so
// that a restarted init container never leaves half a binary.
func copySelf(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: berth-blob copy-self DEST")
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("copy-self: %w", err)
	}
	in, err := os.Open(self)
	if err != nil {
		return fmt.Errorf("copy-self: %w", err)
	}
	defer in.Close()
	dest := args[0]
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return fmt.Errorf("copy-self: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dest), ".berth-blob-*")
	if err != nil {
		return fmt.Errorf("copy-self: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("copy-self to %s: %w", dest, err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return fmt.Errorf("copy-self: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("copy-self: %w", err)
	}
	if err := os.Rename(tmp.Name(), dest); err != nil {
		return fmt.Errorf("copy-self: %w", err)
	}
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func envInt(k string, def int) int {
	var v int
	if _, err := fmt.Sscan(os.Getenv(k), &v); err == nil {
		return v
	}
	return def
}

func envDuration(k string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(k)); err == nil {
		return d
	}
	return def
}
