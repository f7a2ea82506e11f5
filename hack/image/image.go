package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"berth.dev/berth/pkg/localcluster"
)

// The defaults of Options.
const (
	DefaultRepository = "ghcr.io/berth-dev"
	DefaultVersion    = "v0.1.0"
	DefaultCACerts    = "/etc/ssl/certs/ca-certificates.crt"
	// imageCACerts is where the CA bundle lands; Go's crypto/x509 reads it
	// there on Linux.
	imageCACerts = "/etc/ssl/certs/ca-certificates.crt"
	// imageUser is the image's user, the one berth's webhook runs
	// containers as when they name none.
	imageUser = "1000:1000"
)

// archs are the architectures an image is built for.
var archs = []string{"amd64", "arm64"}

// epoch is every file's and the image's time, so that the same sources give
// the same digest.
var epoch = time.Unix(0, 0).UTC()

// Options say which image to build.
type Options struct {
	// Binary is the folder of ./cmd to build.
	Binary string
	// Tag is the reference written into the tarball.
	Tag string
	// Out is the tarball's path.
	Out string
	// Arch is the GOARCH.
	Arch string
	// CACerts is the CA bundle copied into the image.
	CACerts string
	// Dir is the repository's root; default: found upwards from the
	// working directory.
	Dir string
}

func (o Options) tag() string {
	if o.Tag != "" {
		return o.Tag
	}
	return DefaultRepository + "/" + o.Binary + ":" + DefaultVersion
}

// Build builds the image o names, writes it to o.Out and returns its digest.
func Build(ctx context.Context, o Options) (v1.Hash, error) {
	if o.Arch == "" {
		o.Arch = "amd64"
	}
	if o.CACerts == "" {
		o.CACerts = DefaultCACerts
	}
	if err := o.check(); err != nil {
		return v1.Hash{}, err
	}
	ref, err := name.NewTag(o.tag())
	if err != nil {
		return v1.Hash{}, fmt.Errorf("--tag %q is not an image reference: %w; write it as REGISTRY/REPOSITORY:TAG", o.Tag, err)
	}
	certs, err := os.ReadFile(o.CACerts)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("--ca-certs %q: %w; install ca-certificates or name another bundle", o.CACerts, err)
	}
	tmp, err := os.MkdirTemp("", "berth-image-")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, o.Binary)
	if err := goBuild(ctx, o, bin); err != nil {
		return v1.Hash{}, err
	}
	exe, err := os.ReadFile(bin)
	if err != nil {
		return v1.Hash{}, err
	}
	layer, err := rootfs(o.Binary, exe, certs)
	if err != nil {
		return v1.Hash{}, err
	}
	img, err := image(o, layer)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := os.MkdirAll(filepath.Dir(o.Out), 0o755); err != nil {
		return v1.Hash{}, err
	}
	if err := tarball.WriteToFile(o.Out, ref, img); err != nil {
		return v1.Hash{}, fmt.Errorf("write %s: %w", o.Out, err)
	}
	return img.Digest()
}

func (o *Options) check() error {
	if o.Binary == "" {
		return errors.New("--binary is required: name a folder of ./cmd, for example --binary berth-blob")
	}
	if o.Out == "" {
		return errors.New("--out is required: the tarball to write, for example bin/images/" + o.Binary + ".tar")
	}
	if !slices.Contains(archs, o.Arch) {
		return fmt.Errorf("--arch %q is not supported; use one of %v", o.Arch, archs)
	}
	if o.Dir == "" {
		dir, err := localcluster.RepoRoot(".")
		if err != nil {
			return fmt.Errorf("%w: run from berth's clone", err)
		}
		o.Dir = dir
	}
	if st, err := os.Stat(filepath.Join(o.Dir, "cmd", o.Binary)); err != nil || !st.IsDir() {
		return fmt.Errorf("--binary %q: no folder cmd/%s in %s; use one of berth's binaries, for example berth-blob", o.Binary, o.Binary, o.Dir)
	}
	return nil
}

// goBuild builds a static, reproducible binary: no cgo, no paths, no build
// id.
func goBuild(ctx context.Context, o Options, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", out, "./cmd/"+o.Binary)
	cmd.Dir = o.Dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.Arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/%s: %w\n%s", o.Binary, err, b)
	}
	return nil
}

// rootfs is the image's one layer: the binary at /, the CA bundle, and an
// /etc/passwd and /etc/group that name the image's user.
func rootfs(binary string, exe, certs []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(p string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX})
	}
	file := func(p string, mode int64, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(b)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	err := errors.Join(
		file(binary, 0o755, exe),
		dir("etc"),
		file("etc/passwd", 0o644, []byte("root:x:0:0:root:/:/sbin/nologin\nberth:x:1000:1000:berth:/:/sbin/nologin\n")),
		file("etc/group", 0o644, []byte("root:x:0:\nberth:x:1000:\n")),
		dir("etc/ssl"),
		dir("etc/ssl/certs"),
		file(imageCACerts[1:], 0o644, certs),
		dir("tmp"),
		tw.Close(),
	)
	if err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.DockerLayer))
}

// image is the image of layer, run as imageUser with the binary as its
// entrypoint. It has Docker's media types, which the tarball format implies:
// the image read back from the tarball, or pushed from it, has the digest
// Build returns.
func image(o Options, layer v1.Layer) (v1.Image, error) {
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: epoch}, CreatedBy: "berth hack/image: " + o.Binary + " and CA certificates",
	}})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", o.Arch
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.Entrypoint = []string{"/" + o.Binary}
	cfg.Config.User = imageUser
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = []string{"PATH=/", "SSL_CERT_FILE=" + imageCACerts}
	cfg.Config.Labels = map[string]string{
		"org.opencontainers.image.title":   o.Binary,
		"org.opencontainers.image.version": DefaultVersion,
	}
	return mutate.ConfigFile(img, cfg)
}
