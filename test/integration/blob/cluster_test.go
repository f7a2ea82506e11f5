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
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
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
// webhooks and the grant API, and a restricted namespace of a new org
// whose blob settings point at Azurite, with the connection string in a
// Secret of berth's namespace that only berth-manager reads. The org owns
// projects; every org of these tests shares Azurite's containers, so each
// names its own.
func clusterSetup(t *testing.T, e *env, projects ...berthv1alpha1.BlobProject) (*framework.ClusterEnv, string) {
	c := managerCluster(t, e)
	ns := orgNamespace(t, c, orgWithBlob(e, "blob-"+rand.String(6), projects...))
	return c, ns
}

// managerCluster returns the local cluster with the package's
// berth-manager.
func managerCluster(t *testing.T, e *env) *framework.ClusterEnv {
	c := framework.Cluster(t)
	managerOnce.Do(func() {
		manager = framework.StartPackageManager(t, c, framework.ManagerOptions{Args: []string{
			"--scheduler-name=", "--controllers=buildqueue", "--blob-image=" + testBlobImage}})
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "blob-dev", Namespace: "berth-system"},
			StringData: map[string]string{"connectionString": e.azurite.ConnectionString()}}
		require.NoError(t, c.Client.Create(t.Context(), secret))
	})
	if manager == nil {
		t.Fatal("berth-manager failed to start in an earlier test")
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("berth-manager log, last lines:\n%s", manager.Tail(30))
		}
	})
	return c
}

// orgWithBlob is an org on Azurite that owns projects.
func orgWithBlob(e *env, name string, projects ...berthv1alpha1.BlobProject) *berthv1alpha1.Organization {
	return testutil.Org(name).Blob(berthv1alpha1.BlobSettings{
		AccountURL:        e.azurite.BlobEndpoint(),
		CredentialsSecret: &berthv1alpha1.SecretKeyRef{Name: "blob-dev"},
		Projects:          projects,
	}).Obj()
}

// orgNamespace creates org unless it exists, and a new namespace of it
// that enforces Pod Security restricted.
func orgNamespace(t *testing.T, c *framework.ClusterEnv, org *berthv1alpha1.Organization) string {
	t.Helper()
	if err := c.Client.Get(t.Context(), client.ObjectKeyFromObject(org), &berthv1alpha1.Organization{}); err != nil {
		c.Create(t, org)
	}
	ns := c.Namespace(t, org.Name)
	nsObj := &corev1.Namespace{}
	require.NoError(t, c.Client.Get(t.Context(), client.ObjectKey{Name: ns}, nsObj))
	nsObj.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	require.NoError(t, c.Client.Update(t.Context(), nsObj))
	return ns
}

// podToken asks the API server for a token bound to pod, with berth's
// audience: what the kubelet projects into the Pod's token volume.
func podToken(t *testing.T, c *framework.ClusterEnv, pod *corev1.Pod) string {
	t.Helper()
	kube, err := kubernetes.NewForConfig(c.Config)
	require.NoError(t, err)
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr, err := kube.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(t.Context(), sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{blob.TokenAudience},
			ExpirationSeconds: ptr.To[int64](webhooks.BlobTokenSeconds),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	return tr.Status.Token
}

// nowhere keeps a build's Pod Pending: the grant API answers only for Pods
// that have not finished, and no node here runs one.
var nowhere = map[string]string{"berth.dev/test": "nowhere"}

func TestBuildJobHoldsNoCredentialAndMovesTheBytesThroughGrants(t *testing.T) {
	e := setup(t)
	projectID := "shop-" + rand.String(5)
	c, ns := clusterSetup(t, e, berthv1alpha1.BlobProject{Name: projectID})
	e.uploadSource(t, projectID, project)

	script := `mkdir -p /workspace/out && cp -R . /workspace/out/ && echo "built in $(pwd)" && ` +
		`cat /proc/$$/environ /proc/$PPID/environ | tr '\0' '\n' | sed 's/^/env: /'`
	job := testutil.Job("build").Namespace(ns).Class(berthv1alpha1.ClassBuild).User("ana").Project(projectID).
		Command("sh", "-c", script).Obj()
	job.Spec.Template.Spec.NodeSelector = nowhere
	c.Create(t, job)
	spec := job.Spec.Template.Spec

	require.Len(t, spec.InitContainers, 2)
	assert.Equal(t, webhooks.BlobInstallContainer, spec.InitContainers[0].Name)
	assert.Equal(t, webhooks.BlobFetchContainer, spec.InitContainers[1].Name)
	assert.Equal(t, testBlobImage, spec.InitContainers[1].Image)
	assert.Equal(t, []string{webhooks.BlobPath, "run", "--project=" + projectID, "--manager-url=" + manager.URL,
		"--projects-container=projects", "--artifacts-container=artifacts", "--", "sh", "-c", script}, spec.Containers[0].Command)
	assert.Equal(t, webhooks.SourceDir, spec.Containers[0].WorkingDir)
	// Nothing in the Pod opens the account: no Secret, no key.
	for _, ctr := range append(spec.InitContainers, spec.Containers...) {
		for _, ev := range ctr.Env {
			assert.Nil(t, ev.ValueFrom, "%s: %s", ctr.Name, ev.Name)
			assert.NotContains(t, ev.Value, "AccountKey", "%s: %s", ctr.Name, ev.Name)
		}
	}

	// The build queue releases it, and its Pod passes Pod Security
	// restricted as the API server enforces it on the namespace.
	var pods corev1.PodList
	framework.Eventually(t, time.Minute, "the build's Pod", func(ctx context.Context) (bool, error) {
		err := c.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"job-name": "build"})
		return len(pods.Items) > 0, err
	})
	pod := &pods.Items[0]
	assert.Len(t, pod.Spec.InitContainers, 2)

	// Run the containers as the kubelet would, in order, with their
	// command, args, working dir and environment, and the Pod's own token;
	// paths in the Pod map to a temp dir, and the image's /berth-blob to
	// the binary under test.
	root := t.TempDir()
	writeToken(t, root, podToken(t, c, pod))
	for _, ctr := range spec.InitContainers {
		runContainer(t, e.bin, root, ctr)
	}
	out := runContainer(t, e.bin, root, spec.Containers[0])
	assert.Contains(t, out, "built in "+filepath.Join(root, "workspace/src"))
	assert.Contains(t, out, "env: "+webhooks.EnvBlobManagerCA+"=-----BEGIN CERTIFICATE-----", "the environ dump ran")
	assert.NotContains(t, out, "AccountKey", "the build's environment opens nothing")
	assert.NotContains(t, out, e.azurite.ConnectionString())

	assert.FileExists(t, filepath.Join(root, "berth/bin/berth-blob"), "copy-self installed the binary")
	assert.Equal(t, project, readTree(t, filepath.Join(root, "workspace/src")), "fetch unzipped the sources")
	assert.Equal(t, project, unzipToMap(t, e.download(t, "projects", blob.ResultName(projectID))), "run delivered the results")
	assert.Contains(t, string(e.download(t, "projects", blob.LogName(projectID))), "built in ")
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

// writeToken puts the Pod's token where the kubelet would, below root.
func writeToken(t *testing.T, root, token string) {
	t.Helper()
	p := filepath.Join(root, blob.DefaultTokenFile)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(token), 0o600))
}

// runContainer runs one container of the Pod locally and returns its
// output. Its environment is the container's, nothing of the test's.
func runContainer(t *testing.T, bin, root string, ctr corev1.Container) string {
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
		"BERTH_OUTPUTS=" + filepath.Join(root, "workspace/out"),
		"BERTH_BLOB_TOKEN_FILE=" + filepath.Join(root, blob.DefaultTokenFile)}
	for _, ev := range ctr.Env {
		require.Nil(t, ev.ValueFrom, "container %s takes %s from elsewhere", ctr.Name, ev.Name)
		cmd.Env = append(cmd.Env, ev.Name+"="+ev.Value)
	}
	require.NoError(t, os.MkdirAll(cmd.Dir, 0o755))
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "container %s (%v):\n%s", ctr.Name, argv, b)
	return string(b)
}
