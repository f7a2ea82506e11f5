package bench

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

const (
	// noopLabel is the label key the no-op webhook selects on (Exists).
	// berth's webhooks select berth.dev/class, so neither sees the other's
	// Pods.
	noopLabel = "bench.berth.dev/noop"
	// noopWebhookName names the no-op webhook in its configuration and in
	// the API server's metrics.
	noopWebhookName = "pods.noop.bench.berth.dev"
	noopPath        = "/mutate-noop"
	// berth's configuration and its Pod mutating webhook, whose settings
	// the no-op copies.
	berthConfiguration   = "berth"
	berthPodMutatingHook = "pods.mutate.berth.dev"
)

// noopWebhook is the floor of any webhook-based add-on: a mutating webhook
// that allows every Pod with no patch and decodes nothing. It is served by
// controller-runtime's webhook server as berth's webhooks are: TLS from
// files watched by the certificate watcher, an RSA-2048 key as berth's
// certificate rotator makes, and HTTP/1.1 only, as berth-manager serves by
// default (pkg/manager tlsOpts). It runs inside the benchmark's process, on
// the same cores as the API server, etcd, berth-manager and the load.
type noopWebhook struct {
	// calls counts the reviews it answered.
	calls atomic.Int64
	// configuration is the MutatingWebhookConfiguration registering it.
	configuration *admissionregistrationv1.MutatingWebhookConfiguration
}

// startNoopWebhook serves the no-op webhook on 127.0.0.1, registers it with
// the settings of berth's Pod mutating webhook but its own object selector
// (Exists on noopLabel), and waits until the API server calls it for a Pod
// created in ns. The server stops and the configuration is deleted when the
// benchmark ends.
func startNoopWebhook(b *testing.B, env *framework.ClusterEnv, c client.Client, ns string) *noopWebhook {
	b.Helper()
	// controller-runtime logs the server's start and stop; without a logger
	// it warns after 30 s that none was set.
	ctrllog.SetLogger(funcr.New(func(prefix, args string) {
		fmt.Fprintln(os.Stderr, "noop webhook:", prefix, args)
	}, funcr.Options{}))

	certPEM, keyPEM, err := selfSigned("localhost")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), certPEM, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), keyPEM, 0o600); err != nil {
		b.Fatal(err)
	}
	port, err := freeLocalPort()
	if err != nil {
		b.Fatal(err)
	}
	w := &noopWebhook{}
	srv := webhook.NewServer(webhook.Options{
		Host:    "127.0.0.1",
		Port:    port,
		CertDir: dir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
	})
	srv.Register(noopPath, &webhook.Admission{Handler: admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		w.calls.Add(1)
		return admission.Allowed("")
	})})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	var serveErr error
	go func() {
		serveErr = srv.Start(ctx)
		close(stopped)
	}()
	b.Cleanup(func() {
		cancel()
		select {
		case <-stopped:
			if serveErr != nil {
				b.Logf("no-op webhook server: %v", serveErr)
			}
		case <-time.After(70 * time.Second): // Shutdown waits at most a minute
		}
	})
	started := srv.StartedChecker()
	framework.Eventually(b, 30*time.Second, "the no-op webhook server to serve", func(context.Context) (bool, error) {
		select {
		case <-stopped:
			return false, fmt.Errorf("no-op webhook server stopped: %v", serveErr)
		default:
		}
		return started(nil) == nil, nil
	})

	// Copy berth's Pod mutating webhook as berth-manager registered it (rules
	// pods CREATE, failurePolicy, matchPolicy, timeout, sideEffects,
	// reinvocationPolicy, namespaceSelector), so the API server treats both
	// alike; only the name, the endpoint and the object selector differ.
	var berth admissionregistrationv1.MutatingWebhookConfiguration
	if err := env.Client.Get(b.Context(), client.ObjectKey{Name: berthConfiguration}, &berth); err != nil {
		b.Fatalf("read berth's MutatingWebhookConfiguration: %v", err)
	}
	var hook *admissionregistrationv1.MutatingWebhook
	for i := range berth.Webhooks {
		if berth.Webhooks[i].Name == berthPodMutatingHook {
			hook = berth.Webhooks[i].DeepCopy()
		}
	}
	if hook == nil {
		b.Fatalf("berth's MutatingWebhookConfiguration has no webhook %s", berthPodMutatingHook)
	}
	hook.Name = noopWebhookName
	hook.ClientConfig = admissionregistrationv1.WebhookClientConfig{
		// As berth-manager's URL on the local cluster.
		URL:      ptr.To(fmt.Sprintf("https://localhost:%d%s", port, noopPath)),
		CABundle: certPEM,
	}
	hook.ObjectSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: noopLabel, Operator: metav1.LabelSelectorOpExists,
	}}}
	if len(hook.MatchConditions) > 0 {
		// They would be about berth's Pods; the floor has none.
		b.Logf("no-op webhook: dropping berth's match conditions %v", hook.MatchConditions)
		hook.MatchConditions = nil
	}
	w.configuration = &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-noop-%d", os.Getpid())},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{*hook},
	}
	env.Create(b, w.configuration)

	// The API server's webhook informer picks the configuration up within a
	// second or so; dry runs reach the webhook (sideEffects allows it) and
	// leave nothing behind.
	probe := noopPod(ns)("noop-probe")
	framework.Eventually(b, 60*time.Second, "the API server to call the no-op webhook", func(ctx context.Context) (bool, error) {
		_ = c.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		return w.calls.Load() > 0, nil
	})
	return w
}

// noopPod makes the no-op path's Pods: plain Pods in ns with noopLabel, not
// scheduled (no scheduler runs by that name).
func noopPod(ns string) func(string) *corev1.Pod {
	return func(name string) *corev1.Pod {
		return testutil.Pod(name).Namespace(ns).Label(noopLabel, "true").SchedulerName("bench-none").Obj()
	}
}

// settings describes the registered webhook's settings for the log.
func (w *noopWebhook) settings() string {
	h := w.configuration.Webhooks[0]
	ptrStr := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	var rules []string
	for _, r := range h.Rules {
		rules = append(rules, fmt.Sprintf("%v %v", r.Resources, r.Operations))
	}
	return fmt.Sprintf("%s: rules %v, failurePolicy %s, matchPolicy %s, timeout %ds, sideEffects %s, reinvocationPolicy %s, objectSelector %s, namespaceSelector %s",
		h.Name, rules, ptrStr((*string)(h.FailurePolicy)), ptrStr((*string)(h.MatchPolicy)), ptr.Deref(h.TimeoutSeconds, 0),
		ptrStr((*string)(h.SideEffects)), ptrStr((*string)(h.ReinvocationPolicy)),
		metav1.FormatLabelSelector(h.ObjectSelector), metav1.FormatLabelSelector(h.NamespaceSelector))
}

// handlerSeconds is controller-runtime's timing of the no-op's HTTP handler
// in this process (decoding the review, encoding the response): the sum of
// seconds and the count of calls.
func (w *noopWebhook) handlerSeconds(b *testing.B) (sum, n float64) {
	mfs, err := crmetrics.Registry.Gather()
	if err != nil {
		b.Logf("gather controller-runtime's metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "controller_runtime_webhook_latency_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "webhook" && l.GetValue() == noopPath {
					sum += m.GetHistogram().GetSampleSum()
					n += float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return sum, n
}

// selfSigned returns a self-signed RSA-2048 serving certificate for host
// (and 127.0.0.1), valid for a day, and its key, in PEM.
func selfSigned(host string) (certPEM, keyPEM []byte, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		// Its own CA: the configuration's caBundle is the certificate.
		IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	return certPEM, keyPEM, nil
}

// freeLocalPort returns a TCP port free on 127.0.0.1 at the time of the
// call.
func freeLocalPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
