package blob

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/blob"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
	"berth.dev/berth/webhooks"
)

// grantEnv is berth-manager granting URLs of Azurite's blobs to the builds
// of project in ns, as in production: no build holds a credential.
type grantEnv struct {
	cluster *framework.ClusterEnv
	manager *framework.Process
	ns      string
	project string
	// nowhere is a nodeSelector that keeps a build Pod Pending, so the
	// grant API answers for it for as long as the benchmark needs.
	nowhere map[string]string
}

// azuriteClient is a plain client of a, with the org layout's containers
// and the plain path's own.
func azuriteClient(b *testing.B, a *framework.Azurite) *azblob.Client {
	b.Helper()
	c, err := azblob.NewClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"uploads", "projects", "artifacts", "bench"} {
		if _, err := c.CreateContainer(b.Context(), name, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
			b.Fatal(err)
		}
	}
	return c
}

func startGrants(b *testing.B, a *framework.Azurite) *grantEnv {
	b.Helper()
	env := framework.Cluster(b)
	mgr := framework.StartManager(b, env, framework.ManagerOptions{Args: []string{
		"--scheduler-name=", "--controllers=buildqueue", "--blob-image=example.com/berth-blob:bench"}})
	// Each benchmark has its own org and project: an org of the one
	// before may still be going away.
	sfx := rand.String(5)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "blob-bench-" + sfx, Namespace: "berth-system"},
		StringData: map[string]string{"connectionString": a.ConnectionString()}}
	env.Create(b, secret)
	project := "bench-" + sfx
	org := testutil.Org("bench-blob-" + sfx).Blob(berthv1alpha1.BlobSettings{
		AccountURL:        a.BlobEndpoint(),
		CredentialsSecret: &berthv1alpha1.SecretKeyRef{Name: secret.Name},
		Projects:          []berthv1alpha1.BlobProject{{Name: project}},
	}).Obj()
	env.Create(b, org)
	return &grantEnv{cluster: env, manager: mgr, ns: env.Namespace(b, org.Name), project: project,
		nowhere: map[string]string{"berth.dev/bench": "nowhere"}}
}

// buildEnv is the environment berth-blob gets in a Pending build Pod of
// the project: berth-manager's URL and CA, and a file with the Pod's
// token.
func (g *grantEnv) buildEnv(b *testing.B) []string {
	b.Helper()
	job := testutil.Job("bench-build").Namespace(g.ns).Class(berthv1alpha1.ClassBuild).Project(g.project).
		Command("sh", "-c", "true").Obj()
	job.Spec.Template.Spec.NodeSelector = g.nowhere
	g.cluster.Create(b, job)
	var pods corev1.PodList
	framework.Eventually(b, time.Minute, "the build Pod", func(ctx context.Context) (bool, error) {
		err := g.cluster.Client.List(ctx, &pods, client.InNamespace(g.ns), client.MatchingLabels{batchv1.JobNameLabel: job.Name})
		return len(pods.Items) > 0, err
	})
	pod := pods.Items[0]
	kube, err := kubernetes.NewForConfig(g.cluster.Config)
	if err != nil {
		b.Fatal(err)
	}
	tr, err := kube.CoreV1().ServiceAccounts(g.ns).CreateToken(b.Context(), "default", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{blob.TokenAudience},
			ExpirationSeconds: ptr.To[int64](webhooks.BlobTokenSeconds),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	tokenFile := filepath.Join(b.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(tr.Status.Token), 0o600); err != nil {
		b.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(g.manager.CertDir, "ca.crt"))
	if err != nil {
		b.Fatal(err)
	}
	return []string{"BERTH_BLOB_MANAGER_URL=" + g.manager.URL, webhooks.EnvBlobManagerCA + "=" + string(ca),
		"BERTH_BLOB_TOKEN_FILE=" + tokenFile}
}

// developer returns the kubeconfig of a developer (a ServiceAccount with
// the edit role) in ns.
func (g *grantEnv) developer(b *testing.B) string {
	b.Helper()
	g.cluster.Create(b, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "dev", Namespace: g.ns}})
	g.cluster.Create(b, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "dev", Namespace: g.ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "dev", Namespace: g.ns}},
	})
	// The API server's RBAC cache takes a moment to see the binding.
	kube, err := kubernetes.NewForConfig(g.cluster.Config)
	if err != nil {
		b.Fatal(err)
	}
	framework.Eventually(b, 30*time.Second, "dev may create Jobs", func(ctx context.Context) (bool, error) {
		sar, err := kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               "system:serviceaccount:" + g.ns + ":dev",
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: g.ns, Verb: "create", Group: "batch", Resource: "jobs"},
		}}, metav1.CreateOptions{})
		return err == nil && sar.Status.Allowed, err
	})
	return g.cluster.ServiceAccountKubeconfig(b, g.ns, "dev")
}

// jobFile is a --job-file whose Pods stay Pending.
func (g *grantEnv) jobFile(b *testing.B) string {
	b.Helper()
	job := batchv1.Job{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyNever,
		NodeSelector:  g.nowhere,
		Containers:    []corev1.Container{{Name: "build"}},
	}}}}
	job.APIVersion, job.Kind = "batch/v1", "Job"
	out, err := yaml.Marshal(job)
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(b.TempDir(), "job.yaml")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}
