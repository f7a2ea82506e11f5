package blob

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/blob"
	"berth.dev/berth/pkg/blob/blobtest"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
	"berth.dev/berth/webhooks"
)

// buildPod creates a build Job of project in ns whose Pod stays Pending,
// and returns that Pod as admitted. (berth admits a build Pod only as part
// of a Job.)
func buildPod(t *testing.T, c *framework.ClusterEnv, ns, projectID string) *corev1.Pod {
	t.Helper()
	job := testutil.Job("build-"+rand.String(5)).Namespace(ns).Class(berthv1alpha1.ClassBuild).Project(projectID).
		Command("sh", "-c", "true").Obj()
	job.Spec.Template.Spec.NodeSelector = nowhere
	c.Create(t, job)
	var pods corev1.PodList
	framework.Eventually(t, time.Minute, "the Pod of Job "+job.Name, func(ctx context.Context) (bool, error) {
		err := c.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"job-name": job.Name})
		return len(pods.Items) > 0, err
	})
	return &pods.Items[0]
}

// managerCA is berth-manager's CA, as the webhook passes it to build Pods.
func managerCA(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	for _, ev := range pod.Spec.Containers[0].Env {
		if ev.Name == webhooks.EnvBlobManagerCA {
			return ev.Value
		}
	}
	t.Fatalf("Pod %s has no %s", pod.Name, webhooks.EnvBlobManagerCA)
	return ""
}

// asPod runs the real berth-blob as a build Pod's container would: with
// the Pod's token, berth-manager's URL and CA, and no credential.
func (e *env) asPod(t *testing.T, token, ca string, extraEnv []string, args ...string) result {
	t.Helper()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(token), 0o600))
	cmd := exec.CommandContext(t.Context(), e.bin, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "BERTH_BLOB_TOKEN_FILE=" + tokenFile,
		"BERTH_BLOB_MANAGER_URL=" + manager.URL, webhooks.EnvBlobManagerCA + "=" + ca,
		"BERTH_BLOB_RETRY_DELAY=100ms", "BERTH_BLOB_RETRIES=3",
		"BERTH_LOG_FILE=" + filepath.Join(dir, "build.log"), "BERTH_OUTPUTS=" + filepath.Join(dir, "out")}, extraEnv...)
	return runCommand(t, cmd, "berth-blob", args)
}

// runCommand runs cmd to its end and logs what it said; a command that
// cannot start fails the test.
func runCommand(t *testing.T, cmd *exec.Cmd, name string, args []string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("run %s %v: %v", name, args, err)
	}
	r := result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
	t.Logf("%s %s: exit %d\n%s", name, strings.Join(args, " "), r.code, r.stderr)
	return r
}

// grantClient asks berth-manager directly, as a build that replaced
// berth-blob with its own code could.
func grantClient(t *testing.T, token, ca string) *blob.GrantClient {
	t.Helper()
	f := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(f, []byte(token), 0o600))
	gc, err := blob.NewGrantClient(manager.URL, f, []byte(ca))
	require.NoError(t, err)
	return gc
}

// blobNames lists the names below prefix in a container.
func (e *env) blobNames(t *testing.T, containerName, prefix string) []string {
	t.Helper()
	var names []string
	pager := e.client.NewListBlobsFlatPager(containerName, &container.ListBlobsFlatOptions{Prefix: ptr.To(prefix)})
	for pager.More() {
		page, err := pager.NextPage(t.Context())
		require.NoError(t, err)
		for _, b := range page.Segment.BlobItems {
			names = append(names, *b.Name)
		}
	}
	return names
}

func TestABuildReachesOnlyItsOwnProjectsBlobs(t *testing.T) {
	e := setup(t)
	c := managerCluster(t, e)
	sfx := rand.String(5)
	shop, shop2, bank := "shop-"+sfx, "shop2-"+sfx, "bank-"+sfx

	// Two orgs on one account and the same containers: A owns shop (from
	// its first namespace only) and shop2, B owns bank.
	orgA := orgWithBlob(e, "blob-a-"+sfx, berthv1alpha1.BlobProject{Name: shop2})
	a1 := orgNamespace(t, c, orgA)
	a2 := orgNamespace(t, c, orgA)
	require.NoError(t, c.Client.Get(t.Context(), client.ObjectKeyFromObject(orgA), orgA))
	orgA.Spec.Blob.Projects = append(orgA.Spec.Blob.Projects, berthv1alpha1.BlobProject{Name: shop, Namespaces: []string{a1}})
	require.NoError(t, c.Client.Update(t.Context(), orgA))
	b1 := orgNamespace(t, c, orgWithBlob(e, "blob-b-"+sfx, berthv1alpha1.BlobProject{Name: bank}))
	for _, p := range []string{shop, shop2, bank} {
		e.uploadSource(t, p, map[string]string{"owner.txt": p})
	}

	pod := buildPod(t, c, a1, shop)
	ca := managerCA(t, pod)
	token := podToken(t, c, pod)

	t.Run("its own sources", func(t *testing.T) {
		r := e.asPod(t, token, ca, nil, "fetch", "--project="+shop, "--dest=src")
		require.Equal(t, 0, r.code, r.stderr)
	})
	t.Run("another org's sources", func(t *testing.T) {
		r := e.asPod(t, token, ca, nil, "fetch", "--project="+bank, "--dest=src")
		assert.NotEqual(t, 0, r.code)
		assert.Contains(t, r.stderr, "403 Forbidden")
		assert.Contains(t, r.stderr, `a build of project "`+shop+`" may not read uploads/`+bank+`/source.zip`)
		assert.NotContains(t, r.stderr, "giving up after", "a refusal is not retried")
	})
	t.Run("another project of its org", func(t *testing.T) {
		r := e.asPod(t, token, ca, nil, "fetch", "--project="+shop2, "--dest=src")
		assert.NotEqual(t, 0, r.code)
		assert.Contains(t, r.stderr, "may not read uploads/"+shop2+"/source.zip")
	})
	t.Run("another org's log and result", func(t *testing.T) {
		r := e.asPod(t, token, ca, nil, "run", "--project="+bank, "--", "sh", "-c", "mkdir -p $BERTH_OUTPUTS && echo x > $BERTH_OUTPUTS/x")
		assert.Equal(t, blob.ExitUploadFailed, r.code)
		assert.Contains(t, r.stderr, "may not write projects/"+bank+"/logs/build.log")
		assert.Contains(t, r.stderr, "may not write projects/"+bank+"/build/result.zip")
	})
	t.Run("a version that climbs out of the project", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "app.jar"), []byte("jar"), 0o644))
		r := e.asPod(t, token, ca, []string{"BERTH_ARTIFACTS=" + dir, "BERTH_VERSION=../" + bank + "/1"}, "run", "--project="+shop, "--", "true")
		assert.Equal(t, 2, r.code)
		assert.Contains(t, r.stderr, `version "../`+bank+`/1" is not valid`)
	})
	t.Run("names a modified berth-blob could ask for", func(t *testing.T) {
		gc := grantClient(t, token, ca)
		for _, req := range []blob.GrantRequest{
			{Container: "artifacts", Name: shop + "/../" + bank + "/1/app.jar", Access: blob.AccessWrite},
			{Container: "artifacts", Name: bank + "/1/app.jar", Access: blob.AccessWrite},
			{Container: "projects", Name: shop + "/build/result.zip", Access: blob.AccessRead},
			{Container: "uploads", Name: shop + "/source.zip", Access: blob.AccessWrite},
			{Container: "uploads", Name: bank + "/source.zip", Access: blob.AccessRead},
		} {
			_, err := gc.Grant(t.Context(), req)
			assert.ErrorContains(t, err, "403 Forbidden", "%+v", req)
			assert.True(t, blob.IsPermanent(err))
		}
		// What it may have opens that one blob, for that one access.
		g, err := gc.Grant(t.Context(), blob.GrantRequest{Container: "artifacts", Name: shop + "/1/app.jar", Access: blob.AccessWrite})
		require.NoError(t, err)
		assert.Equal(t, http.StatusForbidden, httpStatus(t, http.MethodGet, g.URL), "a write grant reads nothing")
		other := strings.Replace(g.URL, shop, bank, 1) // the blob's name, the first the URL holds
		require.NotEqual(t, g.URL, other)
		assert.Equal(t, http.StatusForbidden, httpStatus(t, http.MethodPut, other), "nor writes another blob")
	})
	t.Run("its project from a namespace the org does not allow", func(t *testing.T) {
		p := buildPod(t, c, a2, shop)
		r := e.asPod(t, podToken(t, c, p), ca, nil, "fetch", "--project="+shop, "--dest=src")
		assert.NotEqual(t, 0, r.code)
		assert.Contains(t, r.stderr, "is used from namespaces ["+a1+"] only, not "+a2)
	})
	t.Run("a project its org does not own", func(t *testing.T) {
		p := buildPod(t, c, b1, shop)
		r := e.asPod(t, podToken(t, c, p), ca, nil, "fetch", "--project="+shop, "--dest=src")
		assert.NotEqual(t, 0, r.code)
		assert.Contains(t, r.stderr, `project "`+shop+`" is not one of Organization "blob-b-`+sfx+`"'s`)
	})
	t.Run("the token of a deleted Pod", func(t *testing.T) {
		p := buildPod(t, c, a1, shop)
		tok := podToken(t, c, p)
		require.NoError(t, c.Client.Delete(t.Context(), p, client.GracePeriodSeconds(0)))
		framework.Eventually(t, 30*time.Second, "the Pod gone", func(ctx context.Context) (bool, error) {
			err := c.Client.Get(ctx, client.ObjectKeyFromObject(p), &corev1.Pod{})
			return client.IgnoreNotFound(err) == nil && err != nil, nil
		})
		r := e.asPod(t, tok, ca, nil, "fetch", "--project="+shop, "--dest=src")
		assert.NotEqual(t, 0, r.code)
		// The API server no longer takes a token bound to a deleted Pod.
		assert.Contains(t, r.stderr, "401 Unauthorized")
	})
	t.Run("a token for the API server", func(t *testing.T) {
		r := e.asPod(t, apiServerToken(t, c, a1), ca, nil, "fetch", "--project="+shop, "--dest=src")
		assert.NotEqual(t, 0, r.code)
		assert.Contains(t, r.stderr, "401 Unauthorized")
		assert.Contains(t, r.stderr, blob.TokenAudience)
	})
	t.Run("a manager that is down", func(t *testing.T) {
		r := e.asPod(t, token, ca, []string{"BERTH_BLOB_MANAGER_URL=https://127.0.0.1:1"}, "fetch", "--project="+shop, "--dest=src")
		assert.NotEqual(t, 0, r.code)
		assert.Contains(t, r.stderr, "giving up after 3 attempts")
		assert.Contains(t, r.stderr, "connection refused")
	})

	// Nothing of B's was written, or read into being.
	assert.Empty(t, e.blobNames(t, "projects", bank+"/"))
	assert.Empty(t, e.blobNames(t, "artifacts", bank+"/"))
}

func httpStatus(t *testing.T, method, url string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader("x"))
	require.NoError(t, err)
	req.Header.Set("x-ms-blob-type", "BlockBlob")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// apiServerToken is a token of ns's default ServiceAccount for the API
// server, as any Pod of the namespace may hold.
func apiServerToken(t *testing.T, c *framework.ClusterEnv, ns string) string {
	t.Helper()
	kube, err := kubernetes.NewForConfig(c.Config)
	require.NoError(t, err)
	tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), "default", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	require.NoError(t, err)
	return tr.Status.Token
}

// serviceAccount creates a ServiceAccount in ns bound to clusterRole
// there, and returns a token of it for the API server: a developer.
func serviceAccount(t *testing.T, c *framework.ClusterEnv, ns, name, clusterRole string) string {
	t.Helper()
	c.Create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}})
	c.Create(t, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
	})
	kube, err := kubernetes.NewForConfig(c.Config)
	require.NoError(t, err)
	tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	require.NoError(t, err)
	return tr.Status.Token
}

// projectURL asks berth-manager's project API for a URL of one of a
// project's blobs, as a developer's tool does; it returns the status and
// the grant or the error.
func projectURL(t *testing.T, ca, token, ns, projectID, which string) (int, blob.Grant, string) {
	t.Helper()
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM([]byte(ca)))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost,
		fmt.Sprintf("%s/v1/namespaces/%s/projects/%s/%s", manager.URL, ns, projectID, which), nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var g blob.Grant
	if resp.StatusCode == http.StatusOK {
		require.NoError(t, json.Unmarshal(body, &g))
	}
	return resp.StatusCode, g, string(body)
}

func TestADeveloperPutsSourcesAndReadsTheResult(t *testing.T) {
	e := setup(t)
	c := managerCluster(t, e)
	sfx := rand.String(5)
	shop, bank := "dshop-"+sfx, "dbank-"+sfx
	ns := orgNamespace(t, c, orgWithBlob(e, "blob-dev-"+sfx, berthv1alpha1.BlobProject{Name: shop}))
	orgNamespace(t, c, orgWithBlob(e, "blob-other-"+sfx, berthv1alpha1.BlobProject{Name: bank}))
	dev := serviceAccount(t, c, ns, "dev", "edit")
	viewer := serviceAccount(t, c, ns, "viewer", "view")
	pod := buildPod(t, c, ns, shop)
	ca := managerCA(t, pod)

	// The developer puts the sources through a write URL.
	code, g, body := projectURL(t, ca, dev, ns, shop, "source")
	require.Equal(t, http.StatusOK, code, body)
	var zipped bytes.Buffer
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"main.go": "package main\n"})
	require.NoError(t, blob.ZipDir(t.Context(), dir, &zipped))
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, g.URL, bytes.NewReader(zipped.Bytes()))
	require.NoError(t, err)
	req.Header.Set("x-ms-blob-type", "BlockBlob")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)

	// The build fetches them and delivers its log and result.
	token := podToken(t, c, pod)
	r := e.asPod(t, token, ca, nil, "fetch", "--project="+shop, "--dest=src")
	require.Equal(t, 0, r.code, r.stderr)
	r = e.asPod(t, token, ca, nil, "run", "--project="+shop, "--", "sh", "-c", `echo "built $BERTH_PROJECT"; mkdir -p $BERTH_OUTPUTS && echo ok > $BERTH_OUTPUTS/app.txt`)
	require.Equal(t, 0, r.code, r.stderr)

	// The developer reads them through read URLs.
	code, g, body = projectURL(t, ca, dev, ns, shop, "result")
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, map[string]string{"app.txt": "ok\n"}, unzipToMap(t, httpGet(t, g.URL)))
	code, g, body = projectURL(t, ca, dev, ns, shop, "log")
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, string(httpGet(t, g.URL)), "built")

	// A viewer may read, not put; nobody gets another org's project.
	code, _, body = projectURL(t, ca, viewer, ns, shop, "source")
	assert.Equal(t, http.StatusForbidden, code)
	assert.Contains(t, body, `may not create jobs.batch in namespace \"`+ns+`\"`)
	code, _, _ = projectURL(t, ca, viewer, ns, shop, "result")
	assert.Equal(t, http.StatusOK, code)
	code, _, body = projectURL(t, ca, dev, ns, bank, "result")
	assert.Equal(t, http.StatusForbidden, code)
	assert.Contains(t, body, `project \"`+bank+`\" is not one of Organization`)
	code, _, _ = projectURL(t, ca, "not-a-token", ns, shop, "result")
	assert.Equal(t, http.StatusUnauthorized, code)
}

func httpGet(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	return b
}

// A build's sources that try to escape or to blow up are refused by the
// real berth-blob, running as the build Pod with its projected token: a
// zip-slip, a chain of the archive's own symlinks that leads a dangling
// link out, and a zip bomb whose 2,048 entries share one compressed
// stream. Nothing is written outside the destination, and a refusal is not
// retried.
func TestMaliciousSourcesAreRefusedAsTheBuildPod(t *testing.T) {
	e := setup(t)
	c := managerCluster(t, e)
	project := "evil-" + rand.String(5)
	ns := orgNamespace(t, c, orgWithBlob(e, "blob-evil-"+rand.String(5), berthv1alpha1.BlobProject{Name: project}))
	pod := buildPod(t, c, ns, project)
	ca, token := managerCA(t, pod), podToken(t, c, pod)

	var slip bytes.Buffer
	zw := zip.NewWriter(&slip)
	w, err := zw.Create("../../escaped.txt")
	require.NoError(t, err)
	_, _ = w.Write([]byte("pwned"))
	require.NoError(t, zw.Close())

	for _, tc := range []struct {
		name    string
		archive []byte
		want    string
	}{
		{"zip-slip", slip.Bytes(), `entry "../../escaped.txt": climbs out of the destination with ".." (zip-slip)`},
		{"symlink chain", blobtest.SymlinkChain(), `entry "l": symlink to "p/../x" resolves, through the archive's symlinks, outside the destination`},
		{"overlapping entries", blobtest.SharedStreamBomb(2048, blob.RatioMinBytes), "entries that share bytes are a zip bomb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.uploadRaw(t, "uploads", blob.SourceName(project), tc.archive)
			r := e.asPod(t, token, ca, nil, "fetch", "--project="+project, "--dest=work/src")
			assert.NotEqual(t, 0, r.code)
			assert.Contains(t, r.stderr, tc.want)
			assert.Equal(t, 1, strings.Count(r.stderr, "unsafe archive"), "refused once, not retried")
		})
	}
	assert.Less(t, len(blobtest.SharedStreamBomb(2048, blob.RatioMinBytes)), 128<<10, "the bomb is small")
}
