package manager

import (
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/quota"
)

// The shipped policy decodes into the objects berth-manager installs: the
// policy and a binding that denies.
func TestWorkspacePolicyDecodes(t *testing.T) {
	objs, err := workspacePolicy()
	require.NoError(t, err)
	require.Len(t, objs, 2)
	policy, ok := objs[0].(*admissionregistrationv1.ValidatingAdmissionPolicy)
	require.True(t, ok, "first: %T", objs[0])
	binding, ok := objs[1].(*admissionregistrationv1.ValidatingAdmissionPolicyBinding)
	require.True(t, ok, "second: %T", objs[1])
	assert.Equal(t, "ValidatingAdmissionPolicy", policy.Kind)
	assert.Equal(t, "ValidatingAdmissionPolicyBinding", binding.Kind)
	assert.Equal(t, "berth-workspace-template", policy.Name)
	assert.Equal(t, policy.Name, binding.Spec.PolicyName)
	assert.Equal(t, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}, binding.Spec.ValidationActions)
	assert.Equal(t, []string{"workspaces"}, policy.Spec.MatchConstraints.ResourceRules[0].Resources)
}

// berth-manager caches the Pods and Jobs berth admitted, its own ledgers,
// and no managed fields.
func TestCacheHoldsWhatBerthReads(t *testing.T) {
	o, err := cacheOptions("berth-system")
	require.NoError(t, err)
	selector := func(obj client.Object) labels.Selector {
		for kind, by := range o.ByObject {
			if reflect.TypeOf(kind) == reflect.TypeOf(obj) {
				return by.Label
			}
		}
		t.Fatalf("no cache settings for %T", obj)
		return nil
	}
	labelled := labels.Set{berthv1alpha1.LabelClass: string(berthv1alpha1.ClassWorkspace)}
	other := labels.Set{"app": "web"}
	for _, obj := range []client.Object{&corev1.Pod{}, &batchv1.Job{}} {
		assert.True(t, selector(obj).Matches(labelled), "%T with berth's class label", obj)
		assert.False(t, selector(obj).Matches(other), "%T without it", obj)
	}
	assert.True(t, selector(&corev1.ConfigMap{}).Matches(labels.Set{quota.LabelLedger: ""}))
	assert.False(t, selector(&corev1.ConfigMap{}).Matches(other))

	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}}
	got, err := o.DefaultTransform(pod)
	require.NoError(t, err)
	assert.Empty(t, got.(*corev1.Pod).ManagedFields)
	assert.Equal(t, "p", got.(*corev1.Pod).Name)
}
