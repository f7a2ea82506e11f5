package manager

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
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
