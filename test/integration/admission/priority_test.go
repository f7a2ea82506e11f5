package admission

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// TestPriorityClassOfTheClass: with a berth-workspace PriorityClass in the
// cluster, workspaces get it, even where the cluster's globalDefault
// PriorityClass was written into the Pod first or the user named another
// (system-cluster-critical, say); a class without its own PriorityClass
// keeps the default, and may not name one of its own.
func TestPriorityClassOfTheClass(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()))
	ns := orgNamespace(t, env, org.Name)
	env.Create(t, &schedulingv1.PriorityClass{
		ObjectMeta: metav1.ObjectMeta{Name: "berth-workspace"}, Value: 1000,
		PreemptionPolicy: ptr.To(corev1.PreemptNever),
	})
	env.Create(t, &schedulingv1.PriorityClass{
		ObjectMeta: metav1.ObjectMeta{Name: "test-global-default"}, Value: 5, GlobalDefault: true,
	})
	workspace := func(name string) *corev1.Pod {
		return testutil.Pod(name).Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
	}
	// berth-manager reads PriorityClasses through its cache: wait until a
	// dry run shows both. Until its cache has berth-workspace, a cache that
	// has only the global default denies the Pod, which is not yet a
	// failure.
	framework.Eventually(t, 30*time.Second, "berth-manager to see the PriorityClasses", func(ctx context.Context) (bool, error) {
		p := workspace("dry")
		if err := env.Client.Create(ctx, p, client.DryRunAll); err != nil {
			t.Logf("not yet: %v", err)
			return false, nil
		}
		return p.Spec.PriorityClassName == "berth-workspace", nil
	})

	ws := workspace("ws")
	require.NoError(t, env.Client.Create(t.Context(), ws))
	assert.Equal(t, "berth-workspace", ws.Spec.PriorityClassName, "the global default gives way to the class's PriorityClass")
	assert.Equal(t, ptr.To[int32](1000), ws.Spec.Priority)
	assert.Equal(t, ptr.To(corev1.PreemptNever), ws.Spec.PreemptionPolicy)

	own := workspace("own")
	own.Spec.PriorityClassName = "system-cluster-critical"
	require.NoError(t, env.Client.Create(t.Context(), own))
	assert.Equal(t, "berth-workspace", own.Spec.PriorityClassName, "a PriorityClass the user chose is replaced")
	assert.Equal(t, ptr.To[int32](1000), own.Spec.Priority)

	vllm := testutil.Pod("vllm").Namespace(ns).Class(berthv1alpha1.ClassInference).Resource("nvidia.com/gpu", "1").Obj()
	require.NoError(t, env.Client.Create(t.Context(), vllm))
	assert.Equal(t, "test-global-default", vllm.Spec.PriorityClassName, "no berth-inference PriorityClass: the default stays")
	assert.Equal(t, ptr.To[int32](5), vllm.Spec.Priority)

	critical := testutil.Pod("critical").Namespace(ns).Class(berthv1alpha1.ClassInference).Resource("nvidia.com/gpu", "1").Obj()
	critical.Spec.PriorityClassName = "system-cluster-critical"
	err := env.Client.Create(t.Context(), critical)
	require.Error(t, err, "without berth's PriorityClass, a Pod cannot pick one")
	assert.Contains(t, err.Error(), "remove spec.priorityClassName")
}
