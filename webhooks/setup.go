package webhooks

import (
	"context"
	"fmt"
	"os"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"berth.dev/berth/pkg/quota"
)

// The paths the webhooks are served on.
const (
	PathMutatePod   = "/mutate-pod"
	PathValidatePod = "/validate-pod"
	PathMutateJob   = "/mutate-job"
	PathValidateJob = "/validate-job"
)

// Kinds names the webhooks Setup can serve.
var Kinds = []string{"pod", "job"}

// Setup registers the webhooks of the given kinds ("pod", "job") on srv.
// Reads of namespaces, Organizations and PriorityClasses go through the
// manager's cache; the quota ledger is read and written on the API server.
func Setup(mgr ctrl.Manager, srv webhook.Server, cfg Config, kinds []string) error {
	resolver := &Resolver{Reader: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Config: cfg}
	for _, k := range kinds {
		switch k {
		case "pod":
			ledger := &quota.Ledger{
				Client: directClient(mgr), Namespace: cfg.Namespace, OnConflict: quotaConflicts.Inc,
				OnWrite: func(batch int, took time.Duration) {
					ledgerBatch.Observe(float64(batch))
					ledgerWrites.Observe(took.Seconds())
				},
				HoldSize: cfg.QuotaHoldSize,
			}
			if cfg.QuotaHoldSize > 0 {
				ledger.Replica = replicaName()
				if err := mgr.Add(ledger); err != nil {
					return err
				}
			}
			w := &PodWebhook{Resolver: resolver, Ledger: ledger}
			srv.Register(PathMutatePod, countPatches("Pod", admission.WithDefaulter[*corev1.Pod](mgr.GetScheme(), w)))
			srv.Register(PathValidatePod, admission.WithValidator[*corev1.Pod](mgr.GetScheme(), w))
		case "job":
			w := &JobWebhook{Resolver: resolver}
			srv.Register(PathMutateJob, countPatches("Job", admission.WithDefaulter[*batchv1.Job](mgr.GetScheme(), w)))
			srv.Register(PathValidateJob, admission.WithValidator[*batchv1.Job](mgr.GetScheme(), w))
		default:
			return fmt.Errorf("webhook kind %q is unknown; use %v", k, Kinds)
		}
	}
	return nil
}

// countPatches counts a mutating webhook's allowed responses by whether they
// changed the object. On a Job's Pod, whose template berth already mutated,
// the Pod webhook finds nothing to do.
func countPatches(kind string, wh *admission.Webhook) *admission.Webhook {
	inner := wh.Handler
	wh.Handler = admission.HandlerFunc(func(ctx context.Context, req admission.Request) admission.Response {
		resp := inner.Handle(ctx, req)
		if resp.Allowed {
			result := "unchanged"
			if len(resp.Patches) > 0 {
				result = "patched"
			}
			mutations.WithLabelValues(kind, result).Inc()
		}
		return resp
	})
	return wh
}

// replicaName names this process's quota holds: the host (the Pod's name in
// a cluster) and a random suffix, unique per process.
func replicaName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "berth-manager"
	}
	return host + "-" + rand.String(6)
}

// directClient reads from the API server, not the cache: quota decisions
// must see the latest ledger.
func directClient(mgr ctrl.Manager) client.Client {
	cfg := rest.CopyConfig(mgr.GetConfig())
	// Ledgers are rewritten whole: protobuf halves the API server's work.
	cfg.ContentType = runtime.ContentTypeProtobuf
	c, err := client.New(cfg, client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
	if err != nil {
		panic(fmt.Sprintf("create API client: %v", err)) // only fails on a config the manager already accepted
	}
	return c
}
