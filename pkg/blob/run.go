package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
)

// Sink writes blobs. AzureStore is the real one, blobtest.Fake the test double.
type Sink interface {
	// Upload writes body to container/name, replacing the blob only once
	// the whole body is stored.
	Upload(ctx context.Context, container, name string, body io.Reader, o UploadOptions) error
	// UploadFile writes the file f to container/name as the SDK's UploadFile
	// does: one Put Blob up to 256 MiB, blocks read from the file above.
	// o.CRC32C must be the file's.
	UploadFile(ctx context.Context, container, name string, f *os.File, o UploadOptions) error
}

// DefaultSpoolLimit is the largest outputs dir whose archive is written to a
// file before it is uploaded: the size of one Put Blob.
const DefaultSpoolLimit = 256 << 20

// ExitUploadFailed is run's exit code when the command succeeded but a
// delivery failed after its retries, so that the Job tries again.
const ExitUploadFailed = 75

// RunOptions say where a build's log and results go.
type RunOptions struct {
	Project    string
	Containers Containers
	// OutputsDir is zipped to the result archive after a successful run.
	OutputsDir string
	// ArtifactsDir and Version, both set, upload every file below
	// ArtifactsDir to artifacts/{project}/{version}/ after a successful run.
	ArtifactsDir string
	Version      string
	// LogFile receives the command's stdout and stderr.
	LogFile string
	// Stdout and Stderr are the container log (default os.Stdout and
	// os.Stderr).
	Stdout, Stderr   io.Writer
	Backoff          Backoff
	ProgressInterval time.Duration
	// GracePeriod is how long deliveries may still take once ctx is
	// cancelled (the Pod is being stopped); default 25 s.
	GracePeriod time.Duration
	// SpoolLimit: an outputs dir of up to this many bytes is zipped into a
	// file in SpoolDir (default the log file's dir) and uploaded from it,
	// once, in one Put Blob where it fits, and retried without zipping
	// again. A larger one is zipped as it is uploaded, in blocks, and costs
	// no disk. Default DefaultSpoolLimit; negative never spools.
	SpoolLimit int64
	SpoolDir   string
}

// Run runs argv, keeping its output in the container log and in LogFile,
// then always delivers the log and, on success, the results. It returns
// the command's exit code and the first delivery error. The caller exits
// with the code, or ExitUploadFailed when the code is 0 and there is an
// error.
func Run(ctx context.Context, sink Sink, o RunOptions, argv []string) (int, error) {
	if len(argv) == 0 {
		return 2, errors.New("run: no command given; use: berth-blob run [flags] -- CMD [ARGS...]")
	}
	if err := ValidateProject(o.Project); err != nil {
		return 2, err
	}
	if o.ArtifactsDir != "" && o.Version != "" {
		if err := ValidateVersion(o.Version); err != nil {
			return 2, fmt.Errorf("$BERTH_VERSION: %w", err)
		}
	}
	code, runErr := runCommand(ctx, o, argv)
	log := logr.FromContextOrDiscard(ctx)
	log.Info("command finished", "command", argv[0], "exitCode", code)

	// Deliver even when the Pod is being stopped, within its grace period.
	dctx := ctx
	if ctx.Err() != nil {
		grace := o.GracePeriod
		if grace <= 0 {
			grace = 25 * time.Second
		}
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), grace)
		defer cancel()
	}
	var errs []error
	if runErr != nil {
		errs = append(errs, runErr)
		if code == 0 {
			code = 1
		}
	}
	if err := uploadFile(dctx, sink, o.Containers.Projects, LogName(o.Project), o.LogFile, "text/plain; charset=utf-8", o); err != nil {
		errs = append(errs, err)
	}
	if code == 0 && runErr == nil {
		errs = append(errs, deliverResults(dctx, sink, o)...)
	}
	return code, errors.Join(errs...)
}

// runCommand runs argv with its output teed to the container log and the
// log file. Cancelling ctx sends the command SIGTERM.
func runCommand(ctx context.Context, o RunOptions, argv []string) (int, error) {
	if err := os.MkdirAll(filepath.Dir(o.LogFile), 0o755); err != nil {
		return 1, fmt.Errorf("create log dir: %w", err)
	}
	logFile, err := os.Create(o.LogFile)
	if err != nil {
		return 1, fmt.Errorf("create log file: %w", err)
	}
	defer logFile.Close()
	stdout, stderr := o.Stdout, o.Stderr
	if stdout == nil {
		stdout = os.Stdout
	}
	if stderr == nil {
		stderr = os.Stderr
	}
	lf := &lockedWriter{w: logFile}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = os.Stdin
	cmd.Stdout = io.MultiWriter(stdout, lf)
	cmd.Stderr = io.MultiWriter(stderr, lf)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			fmt.Fprintf(lf, "berth-blob: command killed by %s\n", ws.Signal())
			return 128 + int(ws.Signal()), nil
		}
		return exit.ExitCode(), nil
	case err != nil:
		fmt.Fprintf(lf, "berth-blob: %v\n", err)
		return 127, fmt.Errorf("run %s: %w", argv[0], err)
	}
	return 0, nil
}

// lockedWriter serialises the writes of stdout and stderr into one file.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// deliverResults zips the outputs to the result archive and uploads the
// artifacts.
func deliverResults(ctx context.Context, sink Sink, o RunOptions) []error {
	var errs []error
	if _, err := os.Stat(o.OutputsDir); errors.Is(err, fs.ErrNotExist) {
		logr.FromContextOrDiscard(ctx).Info("outputs dir does not exist, delivering an empty result", "dir", o.OutputsDir)
		if err := os.MkdirAll(o.OutputsDir, 0o755); err != nil {
			errs = append(errs, fmt.Errorf("create outputs dir: %w", err))
		}
	}
	if len(errs) == 0 {
		if err := uploadZip(ctx, sink, o.Containers.Projects, ResultName(o.Project), o.OutputsDir, o); err != nil {
			errs = append(errs, err)
		}
	}
	if o.ArtifactsDir != "" && o.Version != "" {
		if err := uploadTree(ctx, sink, o); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// uploadFile uploads one file with retries.
func uploadFile(ctx context.Context, sink Sink, container, name, file, contentType string, o RunOptions) error {
	what := "upload " + container + "/" + name
	return o.Backoff.Do(ctx, what, func(ctx context.Context) error {
		f, err := os.Open(file)
		if err != nil {
			return Permanent(fmt.Errorf("%s: %w", what, err))
		}
		defer f.Close()
		var size int64 = -1
		if st, err := f.Stat(); err == nil {
			size = st.Size()
		}
		return upload(ctx, sink, container, name, f, size, contentType, o.ProgressInterval)
	})
}

// uploadZip uploads a zip of dir: from a spooled file when dir is small
// enough, else streamed with no temp file, the archive made again on each
// attempt.
func uploadZip(ctx context.Context, sink Sink, container, name, dir string, o RunOptions) error {
	if f, sums, ok := spool(ctx, dir, o); ok {
		defer os.Remove(f.Name())
		defer f.Close()
		return uploadSpooled(ctx, sink, container, name, f, sums, o)
	}
	return o.Backoff.Do(ctx, "upload "+container+"/"+name, func(ctx context.Context) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		pr, pw := io.Pipe()
		zipErr := make(chan error, 1)
		go func() {
			err := ZipDir(ctx, dir, pw)
			pw.CloseWithError(err)
			zipErr <- err
		}()
		err := upload(ctx, sink, container, name, pr, -1, "application/zip", o.ProgressInterval)
		pr.CloseWithError(errUploadEnded)
		cancel()
		zerr := <-zipErr
		if zerr != nil && !errors.Is(zerr, errUploadEnded) && !errors.Is(zerr, context.Canceled) {
			// The outputs cannot be read: no retry helps.
			return Permanent(zerr)
		}
		return err
	})
}

// errUploadEnded stops the zip writer once its upload has ended.
var errUploadEnded = errors.New("upload ended")

// uploadTree uploads every regular file below ArtifactsDir.
func uploadTree(ctx context.Context, sink Sink, o RunOptions) error {
	return filepath.WalkDir(o.ArtifactsDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walk artifacts: %w", err)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(o.ArtifactsDir, p)
		if err != nil {
			return err
		}
		name := ArtifactName(o.Project, o.Version, filepath.ToSlash(rel))
		return uploadFile(ctx, sink, o.Containers.Artifacts, name, p, "application/octet-stream", o)
	})
}

func upload(ctx context.Context, sink Sink, container, name string, r io.Reader, size int64, contentType string, interval time.Duration) error {
	log := logr.FromContextOrDiscard(ctx)
	log.Info("uploading", "blob", container+"/"+name)
	start := time.Now()
	p := startProgress(ctx, "upload", container+"/"+name, size, interval)
	defer p.finish()
	if err := sink.Upload(ctx, container, name, countingReader{r: r, p: p}, UploadOptions{ContentType: contentType}); err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	n := p.n.Load()
	log.Info("uploaded", "blob", container+"/"+name, "bytes", n, "seconds", secs, "mbps", mbps(n, secs))
	return nil
}
