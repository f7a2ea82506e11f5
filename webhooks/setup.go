package webhooks

import (
	"context"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/controllers"
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
// Reads of namespaces, Organizations, PriorityClasses, Jobs and Pods go
// through the manager's cache; ledger charges quota on the API server.
func Setup(mgr ctrl.Manager, srv webhook.Server, cfg Config, kinds []string, ledger Ledger) error {
	resolver := &Resolver{Reader: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Config: cfg}
	for _, k := range kinds {
		switch k {
		case "pod":
			w := &PodWebhook{Resolver: resolver, Ledger: ledger,
				Audit: &controllers.Auditor{Recorder: mgr.GetEventRecorder(berthv1alpha1.AuditReporter)}}
			srv.Register(PathMutatePod, countPatches("Pod", admission.WithDefaulter[*corev1.Pod](mgr.GetScheme(), w)))
			srv.Register(PathValidatePod, admission.WithValidator[*corev1.Pod](mgr.GetScheme(), w))
		case "job":
			w := &JobWebhook{Resolver: resolver, Clock: clock.RealClock{}}
			srv.Register(PathMutateJob, countPatches("Job", admission.WithDefaulter[*batchv1.Job](mgr.GetScheme(), w)))
			srv.Register(PathValidateJob, admission.WithValidator[*batchv1.Job](mgr.GetScheme(), w))
		default:
			return fmt.Errorf("webhook kind %q is unknown; use %v", k, Kinds)
		}
	}
	return nil
}

// QuotaOptions are the quota ledger's options with the webhooks' metrics.
func QuotaOptions() quota.Options {
	return quota.Options{
		OnConflict: quotaConflicts.Inc,
		OnWrite: func(batch int, took time.Duration) {
			ledgerBatch.Observe(float64(batch))
			ledgerWrites.Observe(took.Seconds())
		},
	}
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
