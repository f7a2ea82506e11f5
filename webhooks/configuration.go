package webhooks

import (
	"fmt"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// ConfigurationName names berth's MutatingWebhookConfiguration and
// ValidatingWebhookConfiguration.
const ConfigurationName = "berth"

// Endpoint says how the API server reaches the webhooks: a Service in the
// cluster, or a URL (the local cluster, https://localhost:PORT).
type Endpoint struct {
	Service *admissionregistrationv1.ServiceReference
	URL     string
	// CABundle verifies the webhooks' serving certificate; the certificate
	// rotator keeps it current.
	CABundle []byte
}

func (e Endpoint) clientConfig(path string) admissionregistrationv1.WebhookClientConfig {
	cc := admissionregistrationv1.WebhookClientConfig{CABundle: e.CABundle}
	if e.Service != nil {
		svc := *e.Service
		svc.Path = ptr.To(path)
		cc.Service = &svc
	} else {
		cc.URL = ptr.To(e.URL + path)
	}
	return cc
}

// ChargedExpression is the CEL condition of a Pod create the validating
// webhook sees: the Pod carries AnnotationQuota.
var ChargedExpression = fmt.Sprintf("has(object.metadata.annotations) && %[1]q in object.metadata.annotations && object.metadata.annotations[%[1]q] == %[2]q",
	berthv1alpha1.AnnotationQuota, berthv1alpha1.QuotaCharged)

// PodUpdateExpression is the CEL condition of a Pod update the validating
// webhook sees: berth's labels or the tolerations change, or it is an
// ephemeral container or a resize. Every other update (status, finalizers,
// the owner's own labels) never waits on berth.
// request.subResource is absent, not empty, on the Pod itself.
var PodUpdateExpression = fmt.Sprintf("(has(request.subResource) && request.subResource in ['ephemeralcontainers', 'resize']) || %s || %s || %s",
	labelChanged(berthv1alpha1.LabelClass), labelChanged(berthv1alpha1.LabelOrg), fieldChanged("spec", "tolerations"))

// JobUpdateExpression is the CEL condition of a Job update the validating
// webhook sees: berth's labels, the queue's annotation, suspend, or what a
// build runs change.
var JobUpdateExpression = strings.Join([]string{
	labelChanged(berthv1alpha1.LabelClass), labelChanged(berthv1alpha1.LabelOrg),
	fmt.Sprintf("%s != %s", mapValue("oldObject", "annotations", berthv1alpha1.AnnotationQueuedAt), mapValue("object", "annotations", berthv1alpha1.AnnotationQueuedAt)),
	fieldChanged("spec", "suspend"), fieldChanged("spec", "parallelism"), fieldChanged("spec", "completions"),
	"oldObject.spec.template != object.spec.template",
}, " || ")

// mapValue is the CEL value of obj's metadata.labels or .annotations key k,
// or "".
func mapValue(obj, m, k string) string {
	return fmt.Sprintf("(has(%[1]s.metadata.%[2]s) && %[3]q in %[1]s.metadata.%[2]s ? %[1]s.metadata.%[2]s[%[3]q] : '')", obj, m, k)
}

func labelChanged(k string) string {
	return fmt.Sprintf("%s != %s", mapValue("oldObject", "labels", k), mapValue("object", "labels", k))
}

// fieldChanged is the CEL condition of an optional field that is set on one
// side only, or differs.
func fieldChanged(parent, name string) string {
	return fmt.Sprintf("(has(oldObject.%[1]s.%[2]s) != has(object.%[1]s.%[2]s) || (has(object.%[1]s.%[2]s) && oldObject.%[1]s.%[2]s != object.%[1]s.%[2]s))", parent, name)
}

// Configurations returns berth's webhook configurations: failurePolicy Fail
// inside the scope (labelled objects outside system namespaces), a 3 s
// timeout, and reinvocation so berth sees what later webhooks add.
func Configurations(cfg Config, e Endpoint) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration) {
	objectSelector := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: berthv1alpha1.LabelClass, Operator: metav1.LabelSelectorOpExists,
	}}}
	skipped := []string{"kube-system", "kube-node-lease", "kube-public"}
	if cfg.Namespace != "" {
		skipped = append(skipped, cfg.Namespace)
	}
	namespaceSelector := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn, Values: skipped,
	}}}
	rule := func(group string, resources []string, ops ...admissionregistrationv1.OperationType) []admissionregistrationv1.RuleWithOperations {
		return []admissionregistrationv1.RuleWithOperations{{
			Operations: ops,
			Rule: admissionregistrationv1.Rule{
				APIGroups: []string{group}, APIVersions: []string{"v1"}, Resources: resources,
				Scope: ptr.To(admissionregistrationv1.NamespacedScope),
			},
		}}
	}
	pods := []string{"pods"}
	jobs := []string{"jobs"}
	create := admissionregistrationv1.Create
	update := admissionregistrationv1.Update
	fail := ptr.To(admissionregistrationv1.Fail)
	equivalent := ptr.To(admissionregistrationv1.Equivalent)
	timeout := ptr.To[int32](3)
	versions := []string{"v1"}

	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: ConfigurationName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "pods.mutate.berth.dev", ClientConfig: e.clientConfig(PathMutatePod), Rules: rule("", pods, create),
			FailurePolicy: fail, MatchPolicy: equivalent, TimeoutSeconds: timeout, AdmissionReviewVersions: versions,
			SideEffects:        ptr.To(admissionregistrationv1.SideEffectClassNone),
			ReinvocationPolicy: ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
			ObjectSelector:     objectSelector, NamespaceSelector: namespaceSelector,
		}, {
			Name: "jobs.mutate.berth.dev", ClientConfig: e.clientConfig(PathMutateJob), Rules: rule("batch", jobs, create),
			FailurePolicy: fail, MatchPolicy: equivalent, TimeoutSeconds: timeout, AdmissionReviewVersions: versions,
			SideEffects:        ptr.To(admissionregistrationv1.SideEffectClassNone),
			ReinvocationPolicy: ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
			ObjectSelector:     objectSelector, NamespaceSelector: namespaceSelector,
		}},
	}
	validating := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: ConfigurationName},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: "pods.validate.berth.dev", ClientConfig: e.clientConfig(PathValidatePod),
			Rules:         rule("", []string{"pods", "pods/ephemeralcontainers", "pods/resize"}, create, update),
			FailurePolicy: fail, MatchPolicy: equivalent, TimeoutSeconds: timeout, AdmissionReviewVersions: versions,
			// The quota ledger is written, except on dry runs.
			SideEffects:    ptr.To(admissionregistrationv1.SideEffectClassNoneOnDryRun),
			ObjectSelector: objectSelector, NamespaceSelector: namespaceSelector,
			// Only creates of Pods the mutating webhook marked as counting
			// against a limit (the others were checked there, and cost one
			// call), and the updates berth decides on.
			MatchConditions: []admissionregistrationv1.MatchCondition{{
				Name:       "charged-or-guarded",
				Expression: fmt.Sprintf("(request.operation == 'CREATE' && %s) || (request.operation == 'UPDATE' && (%s))", ChargedExpression, PodUpdateExpression),
			}},
		}, {
			Name: "jobs.validate.berth.dev", ClientConfig: e.clientConfig(PathValidateJob), Rules: rule("batch", jobs, create, update),
			FailurePolicy: fail, MatchPolicy: equivalent, TimeoutSeconds: timeout, AdmissionReviewVersions: versions,
			SideEffects:    ptr.To(admissionregistrationv1.SideEffectClassNone),
			ObjectSelector: objectSelector, NamespaceSelector: namespaceSelector,
			MatchConditions: []admissionregistrationv1.MatchCondition{{
				Name:       "create-or-guarded",
				Expression: fmt.Sprintf("request.operation == 'CREATE' || %s", JobUpdateExpression),
			}},
		}},
	}
	return mutating, validating
}
