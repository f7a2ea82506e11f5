package framework

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/pkg/testutil"
)

// ClusterEnv is a running local cluster with berth's CRDs installed and the
// fake node pools created, or (from Berth, on the kind provider) a cluster
// berth was installed on.
type ClusterEnv struct {
	Cluster *localcluster.Cluster
	// Config reaches the API server as cluster admin.
	Config *rest.Config
	// Client is a controller-runtime client with berth's types registered.
	Client client.Client
	// Scheme holds the built-in types and berth's.
	Scheme *runtime.Scheme
	// Pools are the node pools, as read from manifests/local-cluster/pools.yaml.
	Pools *localcluster.Pools
	// Tools are the binaries, kubectl among them.
	Tools localcluster.Tools
	// kubeconfig is the admin kubeconfig of a provided cluster (Cluster
	// is nil then).
	kubeconfig string
}

// Kubeconfig is the path of an admin kubeconfig for the cluster.
func (e *ClusterEnv) Kubeconfig() string {
	if e.Cluster == nil {
		return e.kubeconfig
	}
	return e.Cluster.Kubeconfig()
}

// Cluster returns the package's local cluster, starting it on first use.
func Cluster(t testing.TB) *ClusterEnv {
	t.Helper()
	requireMain(t)
	state.mu.Lock()
	defer state.mu.Unlock()
	if state.cluster == nil && state.clusterErr == nil {
		state.cluster, state.clusterErr = startCluster()
	}
	if state.clusterErr != nil {
		t.Fatalf("framework: start local cluster: %v", state.clusterErr)
	}
	return state.cluster
}

func startCluster() (*ClusterEnv, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	opts := localcluster.Options{
		Name:    uniqueName("berth-test"),
		WorkDir: filepath.Join(state.dir, "kwok"),
		Tools:   state.tools,
	}
	opts.MetricsServer = state.opts.metricsServer
	opts.DisableScheduler = state.opts.noStockScheduler
	if state.opts.admissionOnly {
		opts.DisableScheduler = true
		opts.ExtraArgs = append(opts.ExtraArgs, "kube-controller-manager=controllers=serviceaccount-controller,serviceaccount-token-controller")
	}
	c, err := localcluster.Create(ctx, opts)
	if err != nil {
		// A component's port, found free, may have been taken before the
		// component bound it (by a test package beside this one). Create
		// removed what it started: try once more, on other ports.
		fmt.Fprintf(os.Stderr, "framework: the local cluster did not start; starting another: %v\n", err)
		opts.Name = uniqueName("berth-test")
		if c, err = localcluster.Create(ctx, opts); err != nil {
			return nil, err
		}
	}
	onTeardown(c.CleanupCommand(), func() { _ = c.Delete(context.Background()) })

	env, err := NewClusterEnv(c, state.tools)
	if err != nil {
		return nil, err
	}
	if err := localcluster.InstallCRDs(ctx, env.Client); err != nil {
		return nil, err
	}
	pools, err := localcluster.DefaultPools()
	if err != nil {
		return nil, err
	}
	for _, name := range pools.Names() {
		p, _ := pools.Get(name)
		if n, ok := state.opts.pools[name]; ok {
			p.Count = n
		}
	}
	if err := localcluster.CreateNodes(ctx, env.Client, pools); err != nil {
		return nil, err
	}
	env.Pools = pools
	return env, nil
}

// NewClusterEnv connects to a running cluster.
func NewClusterEnv(c *localcluster.Cluster, tools localcluster.Tools) (*ClusterEnv, error) {
	cfg, err := c.RESTConfig()
	if err != nil {
		return nil, err
	}
	scheme, err := localcluster.Scheme()
	if err != nil {
		return nil, err
	}
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("create client: %w", err)
	}
	return &ClusterEnv{Cluster: c, Config: cfg, Client: cl, Scheme: scheme, Tools: tools}, nil
}

var nonName = regexp.MustCompile(`[^a-z0-9-]+`)

// Namespace creates a namespace unique to the test, labelled with the trusted
// berth.dev/org label when org is not empty, waits for its default
// ServiceAccount, and deletes it when the test ends.
func (e *ClusterEnv) Namespace(t testing.TB, org string) string {
	t.Helper()
	base := strings.Trim(nonName.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(base) > 40 {
		base = strings.TrimRight(base[:40], "-")
	}
	name := base + "-" + rand.String(5)
	b := testutil.Namespace(name)
	if org != "" {
		b.Org(org)
	}
	ns := b.Obj()
	if err := e.Client.Create(t.Context(), ns); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = e.Client.Delete(context.Background(), ns)
	})
	// The API server refuses Pods until the namespace's default
	// ServiceAccount exists, which the controller manager makes shortly.
	Eventually(t, 30*time.Second, "the default ServiceAccount of namespace "+name, func(ctx context.Context) (bool, error) {
		err := e.Client.Get(ctx, client.ObjectKey{Namespace: name, Name: "default"}, &corev1.ServiceAccount{})
		return err == nil, client.IgnoreNotFound(err)
	})
	return name
}

// Create creates obj and deletes it when the test ends.
func (e *ClusterEnv) Create(t testing.TB, obj client.Object) {
	t.Helper()
	if err := e.Client.Create(t.Context(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, client.ObjectKeyFromObject(obj), err)
	}
	t.Cleanup(func() {
		err := e.Client.Delete(context.Background(), obj, client.PropagationPolicy(metav1.DeletePropagationBackground))
		if err != nil && !apierrors.IsNotFound(err) {
			t.Logf("delete %T %s: %v", obj, client.ObjectKeyFromObject(obj), err)
		}
	})
}

// Eventually polls cond every 100ms until it returns true, fails the test on
// an error or after timeout, and describes what it waited for.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, timeout, true, cond)
	if err != nil {
		t.Fatalf("waiting %s for %s: %v", timeout, what, err)
	}
}

// NodesByPool returns the cluster's nodes grouped by their pool label.
func (e *ClusterEnv) NodesByPool(ctx context.Context) (map[string][]corev1.Node, error) {
	var nodes corev1.NodeList
	if err := e.Client.List(ctx, &nodes); err != nil {
		return nil, err
	}
	out := map[string][]corev1.Node{}
	for _, n := range nodes.Items {
		p := n.Labels[localcluster.LabelPool]
		out[p] = append(out[p], n)
	}
	return out, nil
}

// ServiceAccountKubeconfig writes a kubeconfig that acts as the
// ServiceAccount namespace/name, with a one-hour token from the API server's
// TokenRequest, and returns its path. A process started with it has that
// ServiceAccount's rights and no others.
func (e *ClusterEnv) ServiceAccountKubeconfig(t testing.TB, namespace, name string) string {
	t.Helper()
	token := e.token(t, namespace, name)
	ca := e.Config.CAData
	if len(ca) == 0 && e.Config.CAFile != "" {
		var err error
		if ca, err = os.ReadFile(e.Config.CAFile); err != nil {
			t.Fatal(err)
		}
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: e.Config.Host, CertificateAuthorityData: ca, InsecureSkipTLSVerify: e.Config.Insecure}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: "local", AuthInfo: name}
	cfg.CurrentContext = name
	path := filepath.Join(Dir(t, "kubeconfig-"+name), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// ServiceAccountToken creates the ServiceAccount namespace/name, with a Role
// of rules bound to it when rules are given, and returns a one-hour token of
// it. All are deleted when the test ends.
func (e *ClusterEnv) ServiceAccountToken(t testing.TB, namespace, name string, rules ...rbacv1.PolicyRule) string {
	t.Helper()
	e.Create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}})
	if len(rules) > 0 {
		e.Create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, Rules: rules})
		e.Create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: namespace}}})
	}
	return e.token(t, namespace, name)
}

// token is a one-hour token of the ServiceAccount namespace/name.
func (e *ClusterEnv) token(t testing.TB, namespace, name string) string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(t.Context(), name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token of ServiceAccount %s/%s: %v", namespace, name, err)
	}
	return tr.Status.Token
}

// WatchClient is a client of the cluster that can also watch.
func (e *ClusterEnv) WatchClient(t testing.TB) client.WithWatch {
	t.Helper()
	c, err := client.NewWithWatch(e.Config, client.Options{Scheme: e.Scheme})
	if err != nil {
		t.Fatalf("create watch client: %v", err)
	}
	return c
}
