// Command krew packages kubectl berth for krew: a tar.gz archive of
// kubectl-berth (and its completion script) per platform, and the plugin
// manifest rendered from .krew.yaml as krew-release-bot renders it, with
// each archive's sha256.
//
//	krew --version v0.1.0 --out bin/krew
//
// Then `kubectl krew install --manifest=bin/krew/berth.yaml
// --archive=bin/krew/kubectl-berth_v0.1.0_linux_amd64.tar.gz` installs it
// from the files, and a release uploads the archives where the manifest's
// uris point.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
)

// Platforms are those .krew.yaml lists, as GOOS/GOARCH.
var Platforms = []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64", "windows/amd64"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var o Options
	var platforms string
	flag.StringVar(&o.Version, "version", "v0.1.0", "the release's tag, written into the manifest and the archives' names")
	flag.StringVar(&o.Out, "out", "bin/krew", "the folder of the archives and berth.yaml")
	flag.StringVar(&platforms, "platforms", strings.Join(Platforms, ","), "GOOS/GOARCH pairs to build, comma-separated; the manifest needs an archive of every platform .krew.yaml lists in --out")
	flag.StringVar(&o.Root, "root", ".", "the repository's root")
	flag.Parse()
	o.Platforms = strings.Split(platforms, ",")
	if err := Package(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "krew: %v\n", err)
		os.Exit(1)
	}
}

// Options say what to package.
type Options struct {
	Version   string
	Out       string
	Platforms []string
	Root      string
}

// Package builds the archives of o.Platforms into o.Out and renders the
// manifest there as berth.yaml.
func Package(ctx context.Context, o Options) error {
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return err
	}
	for _, p := range o.Platforms {
		goos, goarch, ok := strings.Cut(p, "/")
		if !ok {
			return fmt.Errorf("--platforms: %q is not GOOS/GOARCH, such as linux/amd64", p)
		}
		if err := buildArchive(ctx, o, goos, goarch); err != nil {
			return err
		}
	}
	manifest, err := Render(filepath.Join(o.Root, ".krew.yaml"), o.Version, o.Out)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(o.Out, "berth.yaml"), manifest, 0o644)
}

// ArchiveName is the archive of one platform, as .krew.yaml names it.
func ArchiveName(version, goos, goarch string) string {
	return fmt.Sprintf("kubectl-berth_%s_%s_%s.tar.gz", version, goos, goarch)
}

func buildArchive(ctx context.Context, o Options, goos, goarch string) error {
	bin := "kubectl-berth"
	if goos == "windows" {
		bin += ".exe"
	}
	tmp, err := os.MkdirTemp("", "krew-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(tmp, bin), "./cmd/kubectl-berth")
	cmd.Dir = o.Root
	cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build kubectl-berth for %s/%s: %w: %s", goos, goarch, err, out)
	}
	files := []string{filepath.Join(tmp, bin)}
	if goos != "windows" {
		files = append(files, filepath.Join(o.Root, "cmd", "kubectl-berth", "kubectl_complete-berth"))
	}
	var buf bytes.Buffer
	if err := writeTarGz(&buf, files); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(o.Out, ArchiveName(o.Version, goos, goarch)), buf.Bytes(), 0o644)
}

// writeTarGz writes files, by their base names, as an executable tar.gz
// with no times or owners, so that the same files give the same archive.
func writeTarGz(w io.Writer, files []string) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: filepath.Base(f), Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// Render renders the manifest template in file for version: addURIAndSha
// writes the uri, with {{ .TagName }} in it replaced, and the sha256 of the
// archive of the same name in dir.
func Render(file, version, dir string) ([]byte, error) {
	text, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	funcs := template.FuncMap{"addURIAndSha": func(uri, tag string) (string, error) {
		uri = strings.ReplaceAll(uri, "{{ .TagName }}", tag)
		name := path.Base(uri)
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "", fmt.Errorf("the manifest names %s, which is not in %s: build it with --platforms", name, dir)
		}
		sum := sha256.Sum256(data)
		return fmt.Sprintf("uri: %s\n    sha256: %s", uri, hex.EncodeToString(sum[:])), nil
	}}
	t, err := template.New(filepath.Base(file)).Funcs(funcs).Option("missingkey=error").Parse(string(text))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", file, err)
	}
	var out bytes.Buffer
	if err := t.Execute(&out, struct{ TagName string }{version}); err != nil {
		return nil, fmt.Errorf("render %s: %w", file, err)
	}
	return out.Bytes(), nil
}
