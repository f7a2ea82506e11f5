// Command berth-manager serves berth's admission webhooks and runs its
// controllers. Flags choose which: several replicas may serve webhooks while
// one leader runs the controllers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"berth.dev/berth/pkg/blobgrants"
	"berth.dev/berth/pkg/manager"
	"berth.dev/berth/pkg/placement"
	"berth.dev/berth/webhooks"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "selftest" {
		selftest(os.Args[2:])
		return
	}
	var o manager.Options
	var hooks, controllers, preset string
	flag.StringVar(&hooks, "webhooks", strings.Join(webhooks.Kinds, ","), "webhooks to serve, comma-separated: pod, job; empty for none")
	flag.StringVar(&controllers, "controllers", strings.Join(manager.Controllers, ","), "controllers to run, comma-separated: buildqueue, orgstatus, workspaces; empty for none")
	flag.StringVar(&o.Webhook.Namespace, "namespace", "berth-system", "berth's own namespace: never handled; holds quota ledgers, the certificate Secret and the leader lease")
	flag.StringVar(&o.Webhook.SchedulerName, "scheduler-name", webhooks.DefaultSchedulerName, "schedulerName written into labelled Pods; empty keeps the Pod's")
	flag.StringVar(&preset, "placement-preset", placement.PresetAKS, "node label and taint keys: "+strings.Join(placement.PresetNames(), ", "))
	flag.StringVar(&o.Webhook.PriorityClassPrefix, "priority-class-prefix", "berth-", "a class's PriorityClass is {prefix}{class}, used when it exists")
	flag.StringVar(&o.Webhook.ManagerUsername, "manager-username", "", "the only user allowed to release queued builds (default: the user berth-manager runs as)")
	flag.StringVar(&o.Webhook.BlobImage, "blob-image", webhooks.DefaultBlobImage, "berth-blob image injected into builds of a project")
	flag.StringVar(&o.Webhook.BlobManagerURL, "blob-manager-url", "", "where berth-blob in build Pods asks berth-manager for its blob URLs (default --webhook-url, else https://{webhook-service}.{namespace}.svc)")
	flag.StringVar(&o.Webhook.BlobManagerCAFile, "blob-manager-ca-file", "", "PEM of the CA that signs berth-manager's serving certificate, passed to build Pods (default {cert-dir}/ca.crt)")
	flag.BoolVar(&o.Webhook.BlobCredentialsInPods, "blob-credentials-in-pods", false, "local development only: pass the org's connection-string Secret, from the build's namespace, into build Pods instead of grants; any build could then read and overwrite every blob of the account")
	flag.DurationVar(&o.BlobGrantMaxTTL, "blob-grant-max-ttl", blobgrants.DefaultMaxTTL, "the longest a build's blob URL lives; berth-blob asks for each when it needs it")
	flag.BoolVar(&o.Webhook.MeteringFinalizer, "metering-finalizer", false, "add berth-meter's finalizer to every labelled Pod at admission, so that a Pod created and deleted while berth-meter is down is still charged; only with berth-meter running, which removes it")
	flag.Int64Var(&o.Webhook.WorkspaceNodeLossSeconds, "workspace-node-loss-seconds", webhooks.DefaultWorkspaceNodeLossSeconds, "how long a workspace Pod tolerates a not-ready or unreachable node before it is evicted and started elsewhere; 0 keeps the API server's 300")
	flag.StringVar(&o.WebhookBindAddress, "webhook-bind-address", ":9443", "host:port the webhook server listens on")
	flag.StringVar(&o.WebhookURL, "webhook-url", "", "register webhook configurations reaching this https base URL (local cluster); empty uses the Helm chart's")
	flag.StringVar(&o.WebhookService, "webhook-service", "berth-webhook", "the webhook Service's name, for the certificate's DNS name")
	flag.StringVar(&o.CertDir, "cert-dir", "/tmp/k8s-webhook-server/serving-certs", "where the serving certificate is read")
	flag.BoolVar(&o.WebhookHTTP2, "webhook-http2", false, "serve webhooks over HTTP/2 too: fewer TLS handshakes, but the API server's single connection reaches one replica only")
	flag.BoolVar(&o.RotateCerts, "rotate-certs", true, "generate and rotate the webhook certificate; turn off when cert-manager provides it")
	flag.DurationVar(&o.CertValidity, "cert-validity", 365*24*time.Hour, "how long a generated serving certificate is valid")
	flag.DurationVar(&o.CertRenewBefore, "cert-renew-before", 90*24*time.Hour, "replace the serving certificate (and the CA) this long before it expires")
	flag.DurationVar(&o.CertCheckInterval, "cert-check-interval", 12*time.Hour, "how often the certificate's expiry is checked")
	flag.StringVar(&o.MetricsBindAddress, "metrics-bind-address", ":8080", "host:port of the Prometheus metrics; 0 turns them off")
	flag.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", ":8081", "host:port of /healthz and /readyz")
	flag.StringVar(&o.PprofBindAddress, "pprof-bind-address", "", "host:port serving Go's /debug/pprof profiles; empty turns them off")
	flag.BoolVar(&o.LeaderElect, "leader-elect", false, "elect a leader to run the controllers, for several replicas")
	busyCPU := flag.String("workspace-busy-cpu", "200m", "CPU use (from metrics.k8s.io, when served) that keeps a workspace past its idle timeout running; 0 turns the check off")
	klog.InitFlags(nil)
	flag.Parse()
	ctrl.SetLogger(klog.NewKlogr())

	o.Webhooks, o.Controllers = split(hooks), split(controllers)
	q, err := resource.ParseQuantity(*busyCPU)
	if err != nil || q.Sign() < 0 {
		fail(fmt.Errorf("--workspace-busy-cpu %q is not a CPU quantity; use for example 200m, or 0 to turn the check off", *busyCPU))
	}
	o.WorkspaceBusyCPU = q
	keys, err := placement.Preset(preset)
	if err != nil {
		fail(fmt.Errorf("--placement-preset: %w", err))
	}
	o.Webhook.Keys = keys
	ctx := ctrl.SetupSignalHandler()
	if err := manager.Run(ctx, ctrl.GetConfigOrDie(), o); err != nil {
		fail(err)
	}
}

// selftest is the chart's helm test: berth-manager selftest --namespace NS
// checks that berth's webhooks mutate a labelled Pod there.
func selftest(args []string) {
	fs := flag.NewFlagSet("selftest", flag.ExitOnError)
	ns := fs.String("namespace", "", "a namespace of an Organization, where a labelled Pod is created in a dry run")
	_ = fs.Parse(args)
	if *ns == "" {
		fail(errors.New("selftest needs --namespace: a namespace of an Organization (chart value tests.namespace)"))
	}
	c, err := client.New(ctrl.GetConfigOrDie(), client.Options{})
	if err != nil {
		fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := manager.SelfTest(ctx, c, *ns, os.Stdout); err != nil {
		fail(err)
	}
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "berth-manager: %v\n", err)
	os.Exit(1)
}
