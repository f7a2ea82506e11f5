package blob

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/blob"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
	"berth.dev/berth/webhooks"
)

var (
	managerOnce sync.Once
	manager     *framework.Process
)

const testBlobImage = "example.com/berth-blob:test"

// clusterSetup returns the local cluster with berth-manager serving the
// webhooks, and a restricted namespace of an org whose blob settings point
// at Azurite through a connection-string Secret.
func clusterSetup(t *testing.T, e *env) (*framework.ClusterEnv, string) {
	c := framework.Cluster(t)
	managerOnce.Do(func() {
		manager = framework.StartPackageManager(t, c, framework.ManagerOptions{Args: []string{
			"--scheduler-name=", "--controllers=buildqueue", "--blob-image=" + testBlobImage}})
	})
	if manager == nil {
		t.Fatal("berth-manager failed to start in an earlier test")
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("berth-manager log, last lines:\n%s", manager.Tail(30))
		}
	})
	org := testutil.Org("blob-" + rand.String(6)).Blob(berthv1alpha1.BlobSettings{
		AccountURL:        e.azurite.BlobEndpoint(),
		CredentialsSecret: &berthv1alpha1.SecretKeyRef{Name: "blob-dev"},
	}).Obj()
	c.Create(t, org)
	ns := c.Namespace(t, org.Name)
	nsObj := &corev1.Namespace{}
	require.NoError(t, c.Client.Get(t.Context(), client.ObjectKey{Name: ns}, nsObj))
	nsObj.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	require.NoError(t, c.Client.Update(t.Context(), nsObj))
	c.Create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "blob-dev", Namespace: ns},
		StringData: map[string]string{"connectionString": e.azurite.ConnectionString()}})
	return c, ns
}

func TestBuildJobIsAdmittedWithBlobAndItsContainersMoveTheBytes(t *testing.T) {
	e := setup(t)
	c, ns := clusterSetup(t, e)
	e.uploadSource(t, "shop-k8s", project)

	script := `mkdir -p /workspace/out && cp -R . /workspace/out/ && echo "built in $(pwd)"`
	job := testutil.Job("build").Namespace(ns).Class(berthv1alpha1.ClassBuild).User("ana").Project("shop-k8s").
		Command("sh", "-c", script).Obj()
	c.Create(t, job)
	spec := job.Spec.Template.Spec

	require.Len(t, spec.InitContainers, 2)
	assert.Equal(t, webhooks.BlobInstallContainer, spec.InitContainers[0].Name)
	assert.Equal(t, webhooks.BlobFetchContainer, spec.InitContainers[1].Name)
	assert.Equal(t, testBlobImage, spec.InitContainers[1].Image)
	assert.Equal(t, []string{webhooks.BlobPath, "run", "--project=shop-k8s", "--account-url=" + e.azurite.BlobEndpoint(),
		"--projects-container=projects", "--artifacts-container=artifacts", "--", "sh", "-c", script}, spec.Containers[0].Command)
	assert.Equal(t, webhooks.SourceDir, spec.Containers[0].WorkingDir)

	// The build queue releases it, and its Pod passes Pod Security
	// restricted as the API server enforces it on the namespace.
	var pods corev1.PodList
	framework.Eventually(t, time.Minute, "the build's Pod", func(ctx context.Context) (bool, error) {
		err := c.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"job-name": "build"})
		return len(pods.Items) > 0, err
	})
	assert.Len(t, pods.Items[0].Spec.InitContainers, 2)

	// Run the containers as the kubelet would, in order, with their
	// command, args, working dir and environment; paths in the Pod map to
	// a temp dir, and the image's /berth-blob to the binary under test.
	root := t.TempDir()
	for _, ctr := range spec.InitContainers {
		runContainer(t, c, ns, e.bin, root, ctr)
	}
	out := runContainer(t, c, ns, e.bin, root, spec.Containers[0])
	assert.Contains(t, out, "built in "+filepath.Join(root, "workspace/src"))

	assert.FileExists(t, filepath.Join(root, "berth/bin/berth-blob"), "copy-self installed the binary")
	assert.Equal(t, project, readTree(t, filepath.Join(root, "workspace/src")), "fetch unzipped the sources")
	assert.Equal(t, project, unzipToMap(t, e.download(t, "projects", blob.ResultName("shop-k8s"))), "run delivered the results")
	assert.Contains(t, string(e.download(t, "projects", blob.LogName("shop-k8s"))), "built in ")
}

func TestBuildJobWithoutCommandIsDenied(t *testing.T) {
	e := setup(t)
	c, ns := clusterSetup(t, e)
	job := testutil.Job("no-command").Namespace(ns).Class(berthv1alpha1.ClassBuild).Project("shop").Obj()
	err := c.Client.Create(t.Context(), job)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spec.template.spec.containers[0].command")
	assert.Contains(t, err.Error(), "set command (and args)")
}

// runContainer runs one container of the Pod locally and returns its
// output.
func runContainer(t *testing.T, c *framework.ClusterEnv, ns, bin, root string, ctr corev1.Container) string {
	t.Helper()
	local := func(s string) string {
		for _, p := range []string{webhooks.BlobDir, webhooks.ScratchMountPath} {
			s = strings.ReplaceAll(s, p, filepath.Join(root, p))
		}
		return s
	}
	argv := append(append([]string{}, ctr.Command...), ctr.Args...)
	if argv[0] == webhooks.BlobImageBinary {
		argv[0] = bin
	}
	for i := range argv {
		argv[i] = local(argv[i])
	}
	cmd := exec.CommandContext(t.Context(), argv[0], argv[1:]...)
	cmd.Dir = root
	if ctr.WorkingDir != "" {
		cmd.Dir = local(ctr.WorkingDir)
	}
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "BERTH_LOG_FILE=" + filepath.Join(root, "workspace/.berth/build.log"),
		"BERTH_OUTPUTS=" + filepath.Join(root, "workspace/out")}
	for _, ev := range ctr.Env {
		v := ev.Value
		if ref := ev.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
			s := &corev1.Secret{}
			require.NoError(t, c.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: ref.SecretKeyRef.Name}, s))
			v = string(s.Data[ref.SecretKeyRef.Key])
		}
		cmd.Env = append(cmd.Env, ev.Name+"="+v)
	}
	require.NoError(t, os.MkdirAll(cmd.Dir, 0o755))
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "container %s (%v):\n%s", ctr.Name, argv, b)
	return string(b)
}
