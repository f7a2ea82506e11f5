package blob

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

const (
	submitFiles  = 5
	submitFile   = 10 << 20 // 5 x 10 MiB: a 50 MiB source folder
	submitRounds = 5
)

// BenchmarkBuildSubmit times kubectl berth build --detach on a 50 MiB
// source folder, from the command's start to its return once the build
// Job is admitted. It puts the sources up through berth-manager's project
// API (TokenReview, SubjectAccessReview, a SAS URL) and creates the Job
// through berth's admission webhooks, as a developer.
//
// The floor is the same work done the plain way, in process, in the same
// rounds: archive/zip of the folder (stored) into a file, UploadFile with
// the connection string, and a plain Job created as cluster admin in a
// namespace berth does not touch. It reports the medians and their ratio.
func BenchmarkBuildSubmit(b *testing.B) {
	a := framework.AzuriteServer(b)
	c := azuriteClient(b, a)
	g := startGrants(b, a)
	kubeconfig, jobFile := g.developer(b), g.jobFile(b)
	bin := framework.Binary(b, "kubectl-berth")
	ca := filepath.Join(g.manager.CertDir, "ca.crt")
	plainNS := g.cluster.Namespace(b, "")

	work := scratchDir(b)
	src := filepath.Join(work, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		b.Fatal(err)
	}
	for i := range submitFiles {
		writeRandom(b, filepath.Join(src, fmt.Sprintf("part-%d.bin", i)), submitFile)
	}

	timed := func(f func()) float64 {
		syscall.Sync()
		start := time.Now()
		f()
		return time.Since(start).Seconds()
	}
	var berth, plain []float64
	steps := []func(int){
		func(int) {
			berth = append(berth, timed(func() {
				cmd := exec.CommandContext(b.Context(), bin, "build", src, "--project="+g.project,
					"--image=example.com/build:1", "--job-file="+jobFile, "--detach",
					"--kubeconfig="+kubeconfig, "--namespace="+g.ns, "--manager-url="+g.manager.URL, "--manager-ca-file="+ca,
					"--", "true")
				// Its zip is spooled where the plain one is: on tmpfs.
				cmd.Env = append(os.Environ(), "TMPDIR="+work)
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("kubectl berth build: %v\n%s", err, out)
				}
			}))
		},
		func(r int) {
			plain = append(plain, timed(func() {
				zipPath := filepath.Join(work, "plain-source.zip")
				storeZip(b, src, zipPath)
				defer os.Remove(zipPath)
				if _, err := c.UploadFile(b.Context(), "bench", "plain/source.zip", openFile(b, zipPath), nil); err != nil {
					b.Fatal(err)
				}
				job := testutil.Job(fmt.Sprintf("plain-%d", r)).Namespace(plainNS).Command("true").Obj()
				job.Spec.Template.Spec.NodeSelector = g.nowhere
				if err := g.cluster.Client.Create(b.Context(), job); err != nil {
					b.Fatal(err)
				}
			}))
		},
	}
	for r := range b.N * submitRounds {
		for i := range steps {
			steps[(r+i)%len(steps)](r)
		}
	}
	mb, mp := framework.Median(berth), framework.Median(plain)
	b.ReportMetric(mb, "s-kubectl-berth-build")
	b.ReportMetric(mp, "s-plain")
	b.ReportMetric(mb/mp, "ratio")
	b.Logf("50 MiB folder to an admitted Job, %d rounds: kubectl berth build %.2f s  plain (zip, UploadFile, create Job) %.2f s  ratio %.2f",
		len(berth), mb, mp, mb/mp)
	b.Logf("  per round, s: kubectl berth build %.2f, plain %.2f", berth, plain)
}
