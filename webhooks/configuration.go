package webhooks

import (
	"fmt"

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

// ChargedExpression is the CEL match condition of the Pod validating
// webhook: the Pod carries AnnotationQuota.
var ChargedExpression = fmt.Sprintf("has(object.metadata.annotations) && %[1]q in object.metadata.annotations && object.metadata.annotations[%[1]q] == %[2]q",
	berthv1alpha1.AnnotationQuota, berthv1alpha1.QuotaCharged)

// TokenChangedExpression matches an update that changes a Pod's quota
// token.
var TokenChangedExpression = fmt.Sprintf("request.operation == 'UPDATE' && %s != %s",
	labelOr("oldObject", berthv1alpha1.LabelQuotaToken), labelOr("object", berthv1alpha1.LabelQuotaToken))

// labelOr is the CEL value of obj's label k, or "".
func labelOr(obj, k string) string {
	return fmt.Sprintf("(has(%[1]s.metadata.labels) && %[2]q in %[1]s.metadata.labels ? %[1]s.metadata.labels[%[2]q] : '')", obj, k)
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
	rule := func(group, resource string, ops ...admissionregistrationv1.OperationType) []admissionregistrationv1.RuleWithOperations {
		return []admissionregistrationv1.RuleWithOperations{{
			Operations: ops,
			Rule: admissionregistrationv1.Rule{
				APIGroups: []string{group}, APIVersions: []string{"v1"}, Resources: []string{resource},
				Scope: ptr.To(admissionregistrationv1.NamespacedScope),
			},
		}}
	}
	create := admissionregistrationv1.Create
	update := admissionregistrationv1.Update
	fail := ptr.To(admissionregistrationv1.Fail)
	equivalent := ptr.To(admissionregistrationv1.Equivalent)
	timeout := ptr.To[int32](3)
	versions := []string{"v1"}

	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: ConfigurationName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "pods.mutate.berth.dev", ClientConfig: e.clientConfig(PathMutatePod), Rules: rule("", "pods", create),
			FailurePolicy: fail, MatchPolicy: equivalent, TimeoutSeconds: timeout, AdmissionReviewVersions: versions,
			// A workspace admitted under a quota hold is charged here,
			// except on dry runs.
			SideEffects:        ptr.To(admissionregistrationv1.SideEffectClassNoneOnDryRun),
			ReinvocationPolicy: ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
			ObjectSelector:     objectSelector, NamespaceSelector: namespaceSelector,
		}, {
			Name: "jobs.mutate.berth.dev", ClientConfig: e.clientConfig(PathMutateJob), Rules: rule("batch", "jobs", create),
			FailurePolicy: fail, MatchPolicy: equivalent, TimeoutSeconds: timeout, AdmissionReviewVersions: versions,
			SideEffects:        ptr.To(admissionregistrationv1.SideEffectClassNone),
			ReinvocationPolicy: ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
			ObjectSelector:     objectSelector, NamespaceSelector: namespaceSelector,
		}},
	}
	validating := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: ConfigurationName},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: "pods.validate.berth.dev", ClientConfig: e.clientConfig(PathValidatePod), Rules: rule("", "pods", create, update),
			FailurePolicy: fail, MatchPolicy: equivalent, TimeoutSeconds: timeout, AdmissionReviewVersions: versions,
			// The quota ledger is written, except on dry runs.
			SideEffects:    ptr.To(admissionregistrationv1.SideEffectClassNoneOnDryRun),
			ObjectSelector: objectSelector, NamespaceSelector: namespaceSelector,
			// Only creates of Pods the mutating webhook marked as counting
			// against a limit (the others were checked there, and cost one
			// call), and updates that change a quota token.
			MatchConditions: []admissionregistrationv1.MatchCondition{{
				Name:       "charged-or-token-changed",
				Expression: fmt.Sprintf("(request.operation == 'CREATE' && %s) || (%s)", ChargedExpression, TokenChangedExpression),
			}},
		}, {
			Name: "jobs.validate.berth.dev", ClientConfig: e.clientConfig(PathValidateJob), Rules: rule("batch", "jobs", create, update),
			FailurePolicy: fail, MatchPolicy: equivalent, TimeoutSeconds: timeout, AdmissionReviewVersions: versions,
			SideEffects:    ptr.To(admissionregistrationv1.SideEffectClassNone),
			ObjectSelector: objectSelector, NamespaceSelector: namespaceSelector,
		}},
	}
	return mutating, validating
}
