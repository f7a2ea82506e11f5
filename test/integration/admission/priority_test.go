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

// TestPriorityClassOfTheClass: with a berth-build PriorityClass in the
// cluster, builds get it, even where the cluster's globalDefault
// PriorityClass was written into the Pod first; a class without its own
// PriorityClass keeps the default.
func TestPriorityClassOfTheClass(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()))
	ns := env.Namespace(t, org.Name)
	env.Create(t, &schedulingv1.PriorityClass{
		ObjectMeta: metav1.ObjectMeta{Name: "berth-build"}, Value: 1000,
		PreemptionPolicy: ptr.To(corev1.PreemptNever),
	})
	env.Create(t, &schedulingv1.PriorityClass{
		ObjectMeta: metav1.ObjectMeta{Name: "test-global-default"}, Value: 5, GlobalDefault: true,
	})
	env.Create(t, &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "test-team-high"}, Value: 50})

	build := func(name string) *corev1.Pod {
		return testutil.Pod(name).Namespace(ns).Class(berthv1alpha1.ClassBuild).Obj()
	}
	// berth-manager reads PriorityClasses through its cache: wait until a
	// dry run shows both.
	framework.Eventually(t, 30*time.Second, "berth-manager to see the PriorityClasses", func(ctx context.Context) (bool, error) {
		p := build("dry")
		if err := env.Client.Create(ctx, p, client.DryRunAll); err != nil {
			return false, err
		}
		return p.Spec.PriorityClassName == "berth-build", nil
	})

	b := build("build")
	require.NoError(t, env.Client.Create(t.Context(), b))
	assert.Equal(t, "berth-build", b.Spec.PriorityClassName, "the global default gives way to the class's PriorityClass")
	assert.Equal(t, ptr.To[int32](1000), b.Spec.Priority)
	assert.Equal(t, ptr.To(corev1.PreemptNever), b.Spec.PreemptionPolicy)

	ws := testutil.Pod("workspace").Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
	require.NoError(t, env.Client.Create(t.Context(), ws))
	assert.Equal(t, "test-global-default", ws.Spec.PriorityClassName, "no berth-workspace PriorityClass: the default stays")
	assert.Equal(t, ptr.To[int32](5), ws.Spec.Priority)

	own := testutil.Pod("own").Namespace(ns).Class(berthv1alpha1.ClassBuild).Obj()
	own.Spec.PriorityClassName = "test-team-high"
	require.NoError(t, env.Client.Create(t.Context(), own))
	assert.Equal(t, "test-team-high", own.Spec.PriorityClassName, "a PriorityClass the user chose is kept")
	assert.Equal(t, ptr.To[int32](50), own.Spec.Priority)
}
