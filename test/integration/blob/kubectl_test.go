package blob

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	krand "k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/blob"
	"berth.dev/berth/test/framework"
	"berth.dev/berth/webhooks"
)

// kubectlBerth runs the real kubectl-berth as a developer whose
// kubeconfig is kubeconfig, in namespace ns.
type kubectlBerth struct {
	bin, kubeconfig, ns string
}

func (k kubectlBerth) command(ctx context.Context, args ...string) *exec.Cmd {
	args = append([]string{args[0], "--kubeconfig=" + k.kubeconfig, "--namespace=" + k.ns,
		"--manager-url=" + manager.URL, "--manager-ca-file=" + filepath.Join(manager.CertDir, "ca.crt")}, args[1:]...)
	return exec.CommandContext(ctx, k.bin, args...)
}

func (k kubectlBerth) run(t *testing.T, args ...string) result {
	t.Helper()
	return runCommand(t, k.command(t.Context(), args...), "kubectl berth", args)
}

// runAsKubelet runs a build Pod's containers as the kubelet would, as
// local processes: berth's init containers, then the build container,
// each with its own command, environment and working dir, the Pod's
// paths mapped below a temporary root, and the Pod's projected token. On
// success it marks the Pod Succeeded, so its Job completes.
func (e *env) runAsKubelet(t *testing.T, c *framework.ClusterEnv, pod *corev1.Pod) {
	t.Helper()
	root := t.TempDir()
	tokenDir := filepath.Join(root, "token")
	require.NoError(t, os.MkdirAll(tokenDir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(tokenDir, "token"), []byte(podToken(t, c, pod)), 0o600))
	paths := strings.NewReplacer(
		webhooks.BlobDir, filepath.Join(root, "bin"),
		webhooks.BlobTokenDir, tokenDir,
		webhooks.ScratchMountPath, filepath.Join(root, "workspace"))
	mapArg := func(s string) string {
		if s == webhooks.BlobImageBinary {
			return e.bin // berth-blob in its own image
		}
		return paths.Replace(s)
	}
	require.NoError(t, os.MkdirAll(filepath.Join(root, "bin"), 0o755))
	for _, ctr := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers[0]) {
		var argv []string
		for _, a := range append(append([]string{}, ctr.Command...), ctr.Args...) {
			argv = append(argv, mapArg(a))
		}
		env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + root,
			"BERTH_BLOB_TOKEN_FILE=" + filepath.Join(tokenDir, "token"),
			"BERTH_OUTPUTS=" + filepath.Join(root, "workspace/out"),
			"BERTH_LOG_FILE=" + filepath.Join(root, "workspace/.berth/build.log")}
		for _, ev := range ctr.Env {
			require.Nil(t, ev.ValueFrom, "container %s takes %s from elsewhere", ctr.Name, ev.Name)
			env = append(env, ev.Name+"="+mapArg(ev.Value))
		}
		dir := root
		if ctr.WorkingDir != "" {
			dir = mapArg(ctr.WorkingDir)
			require.NoError(t, os.MkdirAll(dir, 0o755))
		}
		cmd := exec.CommandContext(t.Context(), argv[0], argv[1:]...)
		cmd.Env, cmd.Dir = env, dir
		out, err := cmd.CombinedOutput()
		t.Logf("container %s of Pod %s: %v\n%s", ctr.Name, pod.Name, err, out)
		require.NoError(t, err, "container %s", ctr.Name)
	}
	framework.Eventually(t, 30*time.Second, "Pod "+pod.Name+" marked Succeeded", func(ctx context.Context) (bool, error) {
		cur := &corev1.Pod{}
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(pod), cur); err != nil {
			return false, err
		}
		cur.Status.Phase = corev1.PodSucceeded
		return c.Client.Status().Update(ctx, cur) == nil, nil
	})
}

// buildPodOf waits for the Pod of the project's newest build Job in ns.
func buildPodOf(t *testing.T, c *framework.ClusterEnv, ns, project string) *corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	framework.Eventually(t, time.Minute, "the Pod of project "+project+"'s build", func(ctx context.Context) (bool, error) {
		err := c.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{berthv1alpha1.LabelProject: project})
		return len(pods.Items) > 0, err
	})
	return &pods.Items[0]
}

// jobFile is a Job manifest for --job-file that keeps the build's Pod
// Pending: this test runs its containers itself.
func jobFile(t *testing.T) string {
	t.Helper()
	job := batchv1.Job{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyNever,
		NodeSelector:  nowhere,
		Containers:    []corev1.Container{{Name: "build"}},
	}}}}
	job.APIVersion, job.Kind = "batch/v1", "Job"
	b, err := yaml.Marshal(job)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "job.yaml")
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

func zipEntries(t *testing.T, b []byte) map[string]string {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	require.NoError(t, err)
	out := map[string]string{}
	for _, f := range zr.File {
		if strings.HasSuffix(f.Name, "/") {
			continue
		}
		rc, err := f.Open()
		require.NoError(t, err)
		var buf bytes.Buffer
		_, err = buf.ReadFrom(rc)
		rc.Close()
		require.NoError(t, err)
		out[f.Name] = buf.String()
	}
	return out
}

func TestKubectlBerthBuildsAFolderToItsResult(t *testing.T) {
	e := setup(t)
	c := managerCluster(t, e)
	sfx := krand.String(5)
	shop := "kb-" + sfx
	ns := orgNamespace(t, c, orgWithBlob(e, "blob-kb-"+sfx, berthv1alpha1.BlobProject{Name: shop}))
	serviceAccount(t, c, ns, "dev", "edit")
	k := kubectlBerth{bin: framework.Binary(t, "kubectl-berth"), kubeconfig: c.ServiceAccountKubeconfig(t, ns, "dev"), ns: ns}

	src := t.TempDir()
	writeTree(t, src, map[string]string{
		".gitignore":          "*.log\n/dist/\n",
		".berthignore":        ".env\n",
		"main.go":             "package main\n",
		"build.sh*":           "#!/bin/sh\necho building\n",
		"debug.log":           "left out by .gitignore",
		"dist/old.jar":        "left out by .gitignore",
		".env":                "TOKEN=left out by .berthignore",
		".git/config":         "never sent",
		"web/.gitignore":      "node_modules/\n",
		"web/index.js":        "js\n",
		"web/node_modules/x":  "left out by web/.gitignore",
		"docs/readme.md":      "docs\n",
		"docs/build/page.log": "left out by the root's *.log",
	})
	require.NoError(t, os.Symlink("docs/readme.md", filepath.Join(src, "README.md")))
	jf := jobFile(t)

	// The developer builds; this test plays the kubelet for the build Pod.
	out := filepath.Join(t.TempDir(), "result.zip")
	cmd := k.command(t.Context(), "build", src, "--project="+shop, "--image=example.com/build:1", "--job-file="+jf, "-o", out,
		"--", "sh", "-c", `echo "building the shop"; cp -R . "$BERTH_OUTPUTS"/`)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Start())
	pod := buildPodOf(t, c, ns, shop)
	e.runAsKubelet(t, c, pod)
	err := cmd.Wait()
	t.Logf("kubectl berth build:\n%s%s", stderr.String(), stdout.String())
	require.NoError(t, err)
	assert.Contains(t, stderr.String(), "succeeded")
	job := pod.Labels[batchv1.JobNameLabel]
	require.NotEmpty(t, job)

	// result.zip holds exactly the sources the build saw: what the
	// ignore files leave, and the link as a link.
	want := map[string]string{
		".gitignore": "*.log\n/dist/\n", ".berthignore": ".env\n", "main.go": "package main\n",
		"build.sh": "#!/bin/sh\necho building\n", "web/.gitignore": "node_modules/\n", "web/index.js": "js\n",
		"docs/readme.md": "docs\n", "README.md": "docs/readme.md",
	}
	result, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Equal(t, want, zipEntries(t, result))

	// logs and result bring them back afterwards.
	r := k.run(t, "logs", job)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "building the shop")
	again := filepath.Join(t.TempDir(), "again.zip")
	r = k.run(t, "result", job, "-o", again)
	require.Equal(t, 0, r.code, r.stderr)
	b, err := os.ReadFile(again)
	require.NoError(t, err)
	assert.Equal(t, result, b)
	r = k.run(t, "result", job)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, result, httpGet(t, strings.TrimSpace(r.stdout)), "the printed URL reads result.zip")

	// queue lists it, finished.
	r = k.run(t, "queue")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Regexp(t, `(?m)^BUILD +PROJECT +STATE +POSITION +AGE$`, r.stdout)
	assert.Regexp(t, `(?m)^`+job+` +`+shop+` +succeeded +- +`, r.stdout)

	t.Run("a symlink out of the folder", func(t *testing.T) {
		dir := t.TempDir()
		writeTree(t, dir, map[string]string{"main.go": "package main\n"})
		require.NoError(t, os.Symlink("../../../../etc/passwd", filepath.Join(dir, "passwd")))
		r := k.run(t, "build", dir, "--project="+shop, "--image=example.com/build:1", "--", "make")
		assert.Equal(t, 1, r.code)
		assert.Contains(t, r.stderr, "passwd is a symlink to \"../../../../etc/passwd\"")
		assert.Contains(t, r.stderr, "name passwd in .berthignore")
		var jobs batchv1.JobList
		require.NoError(t, c.Client.List(t.Context(), &jobs, client.InNamespace(ns)))
		assert.Len(t, jobs.Items, 1, "no Job is created")
	})
	t.Run("a Job admission refuses", func(t *testing.T) {
		before, err := e.client.ServiceClient().NewContainerClient("uploads").NewBlobClient(blob.SourceName(shop)).GetProperties(t.Context(), nil)
		require.NoError(t, err)
		privileged := strings.Replace(readFile(t, jf), "name: build", "name: build\n        securityContext: {privileged: true}", 1)
		bad := filepath.Join(t.TempDir(), "job.yaml")
		require.NoError(t, os.WriteFile(bad, []byte(privileged), 0o644))
		r := k.run(t, "build", src, "--project="+shop, "--image=example.com/build:1", "--job-file="+bad, "--", "make")
		assert.Equal(t, 1, r.code)
		assert.Contains(t, r.stderr, "would be refused")
		assert.Contains(t, r.stderr, "privileged")
		after, err := e.client.ServiceClient().NewContainerClient("uploads").NewBlobClient(blob.SourceName(shop)).GetProperties(t.Context(), nil)
		require.NoError(t, err)
		assert.Equal(t, *before.ETag, *after.ETag, "the project's sources are as they were")
	})
	t.Run("another org's project", func(t *testing.T) {
		r := k.run(t, "build", src, "--project=not-ours-"+sfx, "--image=example.com/build:1", "--", "make")
		assert.Equal(t, 1, r.code)
		assert.Contains(t, r.stderr, "403 Forbidden")
		assert.Contains(t, r.stderr, `project "not-ours-`+sfx+`" is not one of Organization`)
	})
	t.Run("a viewer", func(t *testing.T) {
		serviceAccount(t, c, ns, "viewer", "view")
		v := kubectlBerth{bin: k.bin, kubeconfig: c.ServiceAccountKubeconfig(t, ns, "viewer"), ns: ns}
		r := v.run(t, "build", src, "--project="+shop, "--image=example.com/build:1", "--", "make")
		assert.Equal(t, 1, r.code)
		assert.Contains(t, r.stderr, `cannot create resource "jobs"`, "the API server refuses the dry run, before any upload")
		r = v.run(t, "logs", job)
		assert.Equal(t, 0, r.code, "a viewer reads the log")
	})
	t.Run("a folder of 50 MiB up to the Job admitted", func(t *testing.T) {
		dir := t.TempDir()
		chunk := make([]byte, 10<<20)
		for i := range 5 {
			_, err := rand.Read(chunk)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "blob"+string(rune('a'+i))), chunk, 0o644))
		}
		start := time.Now()
		r := k.run(t, "build", dir, "--project="+shop, "--image=example.com/build:1", "--job-file="+jf, "--detach", "--", "true")
		require.Equal(t, 0, r.code, r.stderr)
		t.Logf("50 MiB folder: kubectl berth build to the Job admitted took %s, process start included", time.Since(start))
		assert.Contains(t, r.stderr, "sources 50.0 MiB up")
		assert.Contains(t, r.stderr, "Job admitted")
	})
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}
