// Package manager wires berth-manager: the admission webhooks, the
// certificate rotator and the controllers, chosen by flags, in one
// controller-runtime manager.
package manager

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"berth.dev/berth/manifests"
	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/blobgrants"
	"berth.dev/berth/pkg/certs"
	"berth.dev/berth/pkg/controllers"
	"berth.dev/berth/pkg/controllers/buildqueue"
	"berth.dev/berth/pkg/controllers/orgstatus"
	"berth.dev/berth/pkg/controllers/workspaces"
	"berth.dev/berth/pkg/httpauth"
	"berth.dev/berth/pkg/quota"
	"berth.dev/berth/webhooks"
)

// Controllers names the controllers berth-manager can run.
var Controllers = []string{buildqueue.Name, orgstatus.Name, workspaces.Name}

// Options are berth-manager's flags.
type Options struct {
	Webhooks    []string
	Controllers []string
	Webhook     webhooks.Config
	// WebhookBindAddress is host:port the webhook server listens on.
	WebhookBindAddress string
	// WebhookURL, when set, makes berth-manager register its own webhook
	// configurations with this base URL (the local cluster). Otherwise the
	// Helm chart's configurations, pointing at WebhookService, are used.
	WebhookURL     string
	WebhookService string
	CertDir        string
	// WebhookHTTP2 serves HTTP/2 too: one multiplexed connection from the
	// API server, fewer TLS handshakes, but no spreading over replicas.
	WebhookHTTP2 bool
	// RotateCerts runs the built-in certificate rotator; off when
	// cert-manager provides the certificate.
	RotateCerts bool
	// CertValidity, CertRenewBefore and CertCheckInterval tune the rotator;
	// zero keeps its defaults.
	CertValidity, CertRenewBefore, CertCheckInterval time.Duration
	MetricsBindAddress                               string
	HealthProbeBindAddress                           string
	// PprofBindAddress serves Go's profiles; empty turns them off.
	PprofBindAddress string
	LeaderElect      bool
	// WorkspaceBusyCPU is the CPU use that keeps a workspace past its idle
	// timeout running; zero turns the check off.
	WorkspaceBusyCPU resource.Quantity
	// BlobGrantMaxTTL caps the life of a build's blob URL.
	BlobGrantMaxTTL time.Duration
}

// Scheme has the built-in types and berth's.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := berthv1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Run runs berth-manager until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	log := ctrl.LoggerFrom(ctx)
	scheme, err := Scheme()
	if err != nil {
		return err
	}
	if o.CertValidity > 0 && o.CertRenewBefore >= o.CertValidity {
		return fmt.Errorf("--cert-renew-before %s is not shorter than --cert-validity %s, so every check would replace the certificate; use for example --cert-validity=8760h --cert-renew-before=2160h",
			o.CertRenewBefore, o.CertValidity)
	}
	host, port, err := splitHostPort(o.WebhookBindAddress)
	if err != nil {
		return fmt.Errorf("--webhook-bind-address %q: %w; use host:port such as 127.0.0.1:9443", o.WebhookBindAddress, err)
	}
	cached, err := cacheOptions(o.Webhook.Namespace)
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Cache:                   cached,
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsBindAddress},
		HealthProbeBindAddress:  o.HealthProbeBindAddress,
		PprofBindAddress:        o.PprofBindAddress,
		LeaderElection:          o.LeaderElect,
		LeaderElectionID:        "berth-manager",
		LeaderElectionNamespace: o.Webhook.Namespace,
		WebhookServer:           webhook.NewServer(webhook.Options{}), // unused: the real one starts once certificates exist
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	direct, err := client.New(cfg, client.Options{Scheme: scheme, Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return err
	}
	if o.Webhook.ManagerUsername == "" {
		if o.Webhook.ManagerUsername, err = whoAmI(ctx, direct); err != nil {
			return err
		}
	}
	ledger, err := newLedger(ctx, cfg, scheme, mgr, o.Webhook.Namespace)
	if err != nil {
		return err
	}
	if err := addControllers(mgr, ledger, o); err != nil {
		return err
	}
	if len(o.Webhooks) > 0 {
		kube, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
		reviewer := httpauth.Reviewer{Kube: kube}
		grants := &blobgrants.Handler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Reviewer: reviewer,
			Namespace: o.Webhook.Namespace, Clock: clock.RealClock{}, MaxTTL: o.BlobGrantMaxTTL}
		apis := map[string]http.Handler{
			workspaces.APIPattern:     &workspaces.API{Client: mgr.GetClient(), Reviewer: reviewer, Clock: clock.RealClock{}},
			blobgrants.Pattern:        grants,
			blobgrants.ProjectPattern: &blobgrants.ProjectAPI{Handler: grants},
		}
		if o.Webhook.BlobManagerURL == "" {
			o.Webhook.BlobManagerURL = o.WebhookURL
		}
		if o.Webhook.BlobManagerURL == "" {
			o.Webhook.BlobManagerURL = fmt.Sprintf("https://%s.%s.svc", o.WebhookService, o.Webhook.Namespace)
		}
		if o.Webhook.BlobManagerCAFile == "" {
			o.Webhook.BlobManagerCAFile = filepath.Join(o.CertDir, "ca.crt")
		}
		if err := addWebhooks(ctx, mgr, direct, ledger, apis, o, host, port); err != nil {
			return err
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	log.Info("starting berth-manager", "webhooks", o.Webhooks, "controllers", o.Controllers,
		"webhookBindAddress", o.WebhookBindAddress, "namespace", o.Webhook.Namespace, "managerUsername", o.Webhook.ManagerUsername)
	return mgr.Start(ctx)
}

// cacheOptions keeps berth-manager's cache to what it reads, so that its
// memory and its watch traffic grow with berth's objects, not with the
// cluster's:
//   - Pods and Jobs with a berth.dev/class label: berth never touches the
//     others, and a label once admitted cannot change (the webhooks deny
//     it);
//   - ConfigMaps: only the quota ledgers in berth's namespace.
//
// Managed fields are dropped from every cached object: nothing reads them,
// and an update without them leaves the API server's copy as it was.
func cacheOptions(namespace string) (cache.Options, error) {
	ledgers, err := labels.Parse(quota.LabelLedger)
	if err != nil {
		return cache.Options{}, err
	}
	labelled, err := labels.Parse(berthv1alpha1.LabelClass)
	if err != nil {
		return cache.Options{}, err
	}
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:       {Label: labelled},
			&batchv1.Job{}:      {Label: labelled},
			&corev1.ConfigMap{}: {Namespaces: map[string]cache.Config{namespace: {}}, Label: ledgers},
		},
		DefaultTransform: cache.TransformStripManagedFields(),
	}, nil
}

// newLedger builds the quota ledger the webhooks charge and orgstatus
// cleans. It writes, and after a lost write reads, on the API server in
// protobuf: ledgers are rewritten whole, and protobuf halves the API server's
// work. A change starts from the manager's watch of the ledgers, so that a
// write usually needs no read first.
func newLedger(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, mgr ctrl.Manager, namespace string) (*quota.Ledger, error) {
	pcfg := rest.CopyConfig(cfg)
	pcfg.ContentType = runtime.ContentTypeProtobuf
	c, err := client.New(pcfg, client.Options{Scheme: scheme, Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return nil, fmt.Errorf("create quota ledger client: %w", err)
	}
	// Registered now, so that the watch starts and syncs with the
	// manager's cache, not at the first webhook call.
	if _, err := mgr.GetCache().GetInformer(ctx, &corev1.ConfigMap{}); err != nil {
		return nil, fmt.Errorf("watch quota ledgers: %w", err)
	}
	o := webhooks.QuotaOptions()
	o.Cache = mgr.GetCache()
	return quota.NewLedger(c, namespace, clock.RealClock{}, o), nil
}

// metricsClient reads metrics.k8s.io straight from the API server: a
// PodMetrics is asked for only when a workspace reaches its idle deadline.
func metricsClient(mgr ctrl.Manager) (client.Reader, error) {
	s := runtime.NewScheme()
	if err := metricsv1beta1.AddToScheme(s); err != nil {
		return nil, err
	}
	return client.New(mgr.GetConfig(), client.Options{Scheme: s})
}

func addControllers(mgr ctrl.Manager, ledger *quota.Ledger, o Options) error {
	audit := &controllers.Auditor{Recorder: mgr.GetEventRecorder(berthv1alpha1.AuditReporter)}
	for _, name := range o.Controllers {
		var err error
		switch name {
		case buildqueue.Name:
			err = buildqueue.NewController(mgr.GetClient(), mgr.GetAPIReader(), audit).Register(mgr)
		case orgstatus.Name:
			err = orgstatus.NewController(mgr.GetClient(), mgr.GetAPIReader(), ledger, clock.RealClock{}).Register(mgr)
		case workspaces.Name:
			wo := workspaces.Options{BusyCPU: o.WorkspaceBusyCPU, Audit: audit}
			if wo.Metrics, err = metricsClient(mgr); err == nil {
				err = workspaces.NewController(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetEventRecorder("berth-workspaces"), clock.RealClock{}, wo).Register(mgr)
			}
		default:
			err = fmt.Errorf("--controllers: %q is unknown; use any of %v", name, Controllers)
		}
		if err != nil {
			return fmt.Errorf("controller %s: %w", name, err)
		}
	}
	return nil
}

// addWebhooks starts the webhook server once the rotator has put a
// certificate in the certificate directory.
// berth's own APIs (workspaces, blob grants) are served beside them, on
// the same port and certificate.
func addWebhooks(ctx context.Context, mgr ctrl.Manager, direct client.Client, ledger *quota.Ledger, apis map[string]http.Handler, o Options, host string, port int) error {
	srv := webhook.NewServer(webhook.Options{
		Host:    host,
		Port:    port,
		CertDir: o.CertDir,
		TLSOpts: tlsOpts(o.WebhookHTTP2),
	})
	if err := webhooks.Setup(mgr, srv, o.Webhook, o.Webhooks, ledger); err != nil {
		return err
	}
	for pattern, h := range apis {
		srv.Register(pattern, h)
	}
	if err := mgr.AddReadyzCheck("webhook", srv.StartedChecker()); err != nil {
		return err
	}
	dnsName := fmt.Sprintf("%s.%s.svc", o.WebhookService, o.Webhook.Namespace)
	if o.WebhookURL != "" {
		u, err := url.Parse(o.WebhookURL)
		if err != nil || u.Scheme != "https" || u.Hostname() == "" {
			return fmt.Errorf("--webhook-url %q is not an https URL; use for example https://localhost:9443", o.WebhookURL)
		}
		dnsName = u.Hostname()
		if err := registerConfigurations(ctx, direct, o); err != nil {
			return err
		}
	}
	if !o.RotateCerts {
		return mgr.Add(srv)
	}
	ready := make(chan struct{})
	err := certs.Setup(ctx, mgr, direct, certs.Options{
		Secret:             types.NamespacedName{Namespace: o.Webhook.Namespace, Name: "berth-webhook-cert"},
		CertDir:            o.CertDir,
		DNSName:            dnsName,
		MutatingWebhooks:   []string{webhooks.ConfigurationName},
		ValidatingWebhooks: []string{webhooks.ConfigurationName},
		Sync:               o.WebhookURL != "",
		ServerCertValidity: o.CertValidity,
		RenewBefore:        o.CertRenewBefore,
		CheckInterval:      o.CertCheckInterval,
	}, ready)
	if err != nil {
		return err
	}
	go func() {
		select {
		case <-ready:
		case <-ctx.Done():
			return
		}
		// The rotator is ready when the Secret is; wait for the files too.
		for !fileExists(o.CertDir+"/tls.crt") || !fileExists(o.CertDir+"/tls.key") {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		if err := mgr.Add(srv); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "start webhook server")
		}
	}()
	return nil
}

// tlsOpts serves HTTP/1.1 only unless http2 is asked for: the API server
// then opens several connections, which a Service spreads over the
// replicas, and HTTP/2's rapid-reset attacks do not apply.
func tlsOpts(http2 bool) []func(*tls.Config) {
	if http2 {
		return nil
	}
	return []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
}

// registerConfigurations points berth's webhook configurations at the URL,
// keeping the CA bundle the rotator injected into existing ones, and
// installs the Workspace template policy when it may (the chart installs
// it, and gives berth-manager no rights on it). It creates
// the namespace and the configurations only when they are missing, so that
// the Helm chart's rights (update, not create) are enough once it installed
// them.
func registerConfigurations(ctx context.Context, c client.Client, o Options) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Webhook.Namespace}}
	if err := c.Get(ctx, client.ObjectKeyFromObject(ns), ns); apierrors.IsNotFound(err) {
		if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %s: %w", ns.Name, err)
		}
	} else if err != nil {
		return fmt.Errorf("read namespace %s: %w", ns.Name, err)
	}
	mut, val := webhooks.Configurations(o.Webhook, webhooks.Endpoint{URL: o.WebhookURL})
	for _, obj := range []client.Object{mut, val} {
		err := updateKeepingCA(ctx, c, obj)
		if apierrors.IsNotFound(err) {
			if err = c.Create(ctx, obj); apierrors.IsAlreadyExists(err) {
				err = updateKeepingCA(ctx, c, obj) // another replica came first
			}
		}
		if err != nil {
			return fmt.Errorf("register %T %s: %w", obj, obj.GetName(), err)
		}
	}
	policy, err := workspacePolicy()
	if err != nil {
		return err
	}
	for _, obj := range policy {
		got := obj.DeepCopyObject().(client.Object)
		err := c.Get(ctx, client.ObjectKeyFromObject(obj), got)
		switch {
		case apierrors.IsForbidden(err):
			// The chart's rights: the chart installs the policy.
			ctrl.LoggerFrom(ctx).Info("not registering the Workspace template policy: no rights on it; whoever installed berth installs it",
				"kind", fmt.Sprintf("%T", obj), "name", obj.GetName())
			continue
		case apierrors.IsNotFound(err):
			err = c.Create(ctx, obj)
		case err == nil:
			obj.SetResourceVersion(got.GetResourceVersion())
			err = c.Update(ctx, obj)
		}
		if err != nil && !apierrors.IsAlreadyExists(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("register %T %s: %w", obj, obj.GetName(), err)
		}
	}
	return nil
}

// workspacePolicy decodes manifests/policies/workspace-template.yaml, the
// policy and its binding, which the chart installs from the same file.
func workspacePolicy() ([]client.Object, error) {
	policy, binding := &admissionregistrationv1.ValidatingAdmissionPolicy{}, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	objs := []client.Object{policy, binding}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifests.WorkspacePolicy()), 4096)
	for _, obj := range objs {
		if err := dec.Decode(obj); err != nil {
			return nil, fmt.Errorf("decode manifests/policies/workspace-template.yaml: %w", err)
		}
	}
	return objs, nil
}

func updateKeepingCA(ctx context.Context, c client.Client, obj client.Object) error {
	got := obj.DeepCopyObject().(client.Object)
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), got); err != nil {
		return err
	}
	want, have := clientConfigs(obj), clientConfigs(got)
	for i := range want {
		if i < len(have) {
			want[i].CABundle = have[i].CABundle
		}
	}
	obj.SetResourceVersion(got.GetResourceVersion())
	return c.Update(ctx, obj)
}

// clientConfigs points at the client configs of a webhook configuration's
// webhooks.
func clientConfigs(obj client.Object) []*admissionregistrationv1.WebhookClientConfig {
	var out []*admissionregistrationv1.WebhookClientConfig
	switch o := obj.(type) {
	case *admissionregistrationv1.MutatingWebhookConfiguration:
		for i := range o.Webhooks {
			out = append(out, &o.Webhooks[i].ClientConfig)
		}
	case *admissionregistrationv1.ValidatingWebhookConfiguration:
		for i := range o.Webhooks {
			out = append(out, &o.Webhooks[i].ClientConfig)
		}
	}
	return out
}

// whoAmI returns the user berth-manager acts as.
func whoAmI(ctx context.Context, c client.Client) (string, error) {
	r := &authenticationv1.SelfSubjectReview{}
	if err := c.Create(ctx, r); err != nil {
		return "", fmt.Errorf("find own username (SelfSubjectReview): %w; set --manager-username", err)
	}
	return r.Status.UserInfo.Username, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, err
	}
	return host, port, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
