// Command image builds a container image of one of berth's binaries without
// a container engine: a static build of ./cmd/NAME, the system's CA
// certificates (berth-blob talks to Azure over HTTPS) and nothing else. It
// writes a tarball that `docker load`, `kind load image-archive` and
// `crane push` read. The same sources give the same image digest.
//
//	image --binary berth-blob --out bin/images/berth-blob.tar
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var o Options
	flag.StringVar(&o.Binary, "binary", "", "the binary to package, a folder of ./cmd (berth-blob, berth-manager, berth-meter, berth-scheduler)")
	flag.StringVar(&o.Tag, "tag", "", "the image reference written into the tarball (default "+DefaultRepository+"/BINARY:"+DefaultVersion+")")
	flag.StringVar(&o.Out, "out", "", "the tarball to write (default bin/images/BINARY.tar)")
	flag.StringVar(&o.Arch, "arch", "amd64", "the CPU architecture to build for (amd64, arm64)")
	flag.StringVar(&o.CACerts, "ca-certs", DefaultCACerts, "the CA bundle to put at "+imageCACerts)
	flag.Parse()
	if o.Out == "" && o.Binary != "" {
		o.Out = "bin/images/" + o.Binary + ".tar"
	}
	digest, err := Build(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "image: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%s %s %s\n", o.Out, o.tag(), digest)
}
