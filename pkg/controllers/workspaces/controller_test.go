package workspaces

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
)

// A wake of a stopped workspace acts on the cache without a fresh read. When
// the cache lags behind the API server, the Pod it creates must not stay:
// the next pass, on the newer state, stops it or keeps exactly one.
func TestWakeFromStaleCacheConverges(t *testing.T) {
	for _, tc := range []struct {
		name string
		// now is the Workspace as the API server has it, while the cache
		// still has it woken at generation 2.
		now         func(ws *berthv1alpha1.Workspace)
		wantRunning int
	}{
		{"stopped since", func(ws *berthv1alpha1.Workspace) { ws.Generation, ws.Spec.Started = 3, false }, 0},
		{"stopped and woken again since", func(ws *berthv1alpha1.Workspace) { ws.Generation = 4 }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			stale := testWorkspace(2, true)
			fresh := stale.DeepCopy()
			tc.now(fresh)
			build := func(ws *berthv1alpha1.Workspace) client.Client {
				return fakeCluster(t, ws).Build()
			}
			// cache is what berth-manager's informers have, and where its
			// writes land; api is the API server, for fresh reads.
			cache, api := build(stale.DeepCopy()), build(fresh.DeepCopy())
			c := NewController(cache, api, events.NewFakeRecorder(10), clocktesting.NewFakeClock(time.Now()), Options{})
			req := ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "team", Name: "ide"}}

			_, err := c.Reconcile(ctx, req)
			require.NoError(t, err)
			var pods corev1.PodList
			require.NoError(t, cache.List(ctx, &pods))
			require.Len(t, pods.Items, 1, "the wake on the stale cache creates its Pod")
			require.Equal(t, startName(stale), pods.Items[0].Name)

			// The cache catches up with the API server.
			var cached berthv1alpha1.Workspace
			require.NoError(t, cache.Get(ctx, req.NamespacedName, &cached))
			cached.Generation, cached.Spec = fresh.Generation, fresh.Spec
			require.NoError(t, cache.Update(ctx, &cached))
			for range 3 {
				_, err = c.Reconcile(ctx, req)
				require.NoError(t, err)
			}
			require.NoError(t, cache.List(ctx, &pods))
			live := 0
			for _, p := range pods.Items {
				if p.DeletionTimestamp == nil {
					live++
				}
			}
			require.Equal(t, tc.wantRunning, live, "Pods left: %v", pods.Items)
		})
	}
}

// A lone start's status records its Pod Running at once. While other
// starts are in flight, it waits until berth-manager has seen the Pod run
// for runningSettle: a burst of wakes' status writes would slow the creates
// still to come.
func TestRunningStatusSettles(t *testing.T) {
	for _, tc := range []struct {
		name   string
		others bool
	}{{"alone", false}, {"in a burst", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			ws := testWorkspace(2, true)
			ws.Status.Phase = berthv1alpha1.WorkspaceStopped
			pod := PodFor(ws, startName(ws))
			pod.UID, pod.Spec.NodeName, pod.Status.Phase = "pod-uid", "node-1", corev1.PodRunning
			cl := fakeCluster(t, ws, pod).Build()
			clk := clocktesting.NewFakeClock(time.Now())
			c := NewController(cl, cl, events.NewFakeRecorder(10), clk, Options{})
			c.starting.Store(pod.UID, clk.Now())
			if tc.others {
				c.starting.Store(types.UID("other-uid"), clk.Now())
			}
			req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(ws)}
			phase := func() berthv1alpha1.WorkspacePhase {
				got := &berthv1alpha1.Workspace{}
				require.NoError(t, cl.Get(ctx, req.NamespacedName, got))
				return got.Status.Phase
			}

			res, err := c.Reconcile(ctx, req)
			require.NoError(t, err)
			if tc.others {
				require.Equal(t, berthv1alpha1.WorkspaceStopped, phase(), "a Pod just seen running is not recorded yet")
				require.Equal(t, runningSettle, res.RequeueAfter, "it is looked at again once it has settled")

				clk.Step(runningSettle / 2)
				res, err = c.Reconcile(ctx, req)
				require.NoError(t, err)
				require.Equal(t, berthv1alpha1.WorkspaceStopped, phase(), "another event does not restart the wait, nor end it")
				require.Equal(t, runningSettle/2, res.RequeueAfter)

				clk.Step(runningSettle / 2)
				_, err = c.Reconcile(ctx, req)
				require.NoError(t, err)
			}
			require.Equal(t, berthv1alpha1.WorkspaceRunning, phase())
			_, ran := c.ran.Load(pod.UID)
			_, starting := c.starting.Load(pod.UID)
			require.False(t, ran || starting, "a recorded Pod is forgotten")

			clk.Step(inFlight)
			c.forgetOld()
			require.False(t, c.othersStarting(pod.UID), "a start is in flight for a while at most")
		})
	}
}

// An idle stop's reason is spent by the stop, once the status records it,
// so that the next wake writes nothing before it creates the Pod.
func TestStopSpendsItsReason(t *testing.T) {
	ctx := t.Context()
	ws := testWorkspace(3, false)
	ws.Annotations = map[string]string{berthv1alpha1.AnnotationStopReason: string(berthv1alpha1.StoppedIdle)}
	ws.Status = berthv1alpha1.WorkspaceStatus{Phase: berthv1alpha1.WorkspaceRunning, PodName: "ide-2-ws-ui", PodUID: "pod-uid", NodeName: "node-1"}
	pod := PodFor(ws, "ide-2-ws-ui")
	pod.UID, pod.Spec.NodeName, pod.Status.Phase = "pod-uid", "node-1", corev1.PodRunning
	var writes []string
	cl := fakeCluster(t, ws, pod).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				writes = append(writes, "create Pod")
				return c.Create(ctx, obj, opts...)
			},
			Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
				writes = append(writes, "patch Workspace")
				return c.Patch(ctx, obj, patch, opts...)
			},
		}).Build()
	c := NewController(cl, cl, events.NewFakeRecorder(10), clocktesting.NewFakeClock(time.Now()), Options{})
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(ws)}
	got := &berthv1alpha1.Workspace{}

	for range 2 {
		_, err := c.Reconcile(ctx, req)
		require.NoError(t, err)
	}
	require.NoError(t, cl.Get(ctx, req.NamespacedName, got))
	require.Equal(t, berthv1alpha1.StoppedIdle, got.Status.StoppedBy)
	require.Equal(t, berthv1alpha1.WorkspaceStopped, got.Status.Phase)
	require.NotContains(t, got.Annotations, berthv1alpha1.AnnotationStopReason, "the stop spends its reason")

	patch := client.MergeFrom(got.DeepCopy())
	got.Spec.Started = true
	require.NoError(t, cl.Patch(ctx, got, patch))
	writes = nil
	_, err := c.Reconcile(ctx, req)
	require.NoError(t, err)
	require.Equal(t, []string{"create Pod"}, writes, "a wake writes the Pod and nothing before it")
}

// testWorkspace is the Workspace team/ide, at generation, of a workspace
// template.
func testWorkspace(generation int64, started bool) *berthv1alpha1.Workspace {
	pod := testutil.Pod("ide").Class(berthv1alpha1.ClassWorkspace).User("ana").Obj()
	return &berthv1alpha1.Workspace{
		ObjectMeta: metav1.ObjectMeta{Name: "ide", Namespace: "team", UID: "ws-uid", Generation: generation},
		Spec: berthv1alpha1.WorkspaceSpec{Started: started, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels}, Spec: pod.Spec,
		}},
	}
}

// fakeCluster builds a fake client holding objs, the namespace team of
// Organization acme, the org and node node-1, with the controller's Pod
// indexes.
func fakeCluster(t *testing.T, objs ...client.Object) *fake.ClientBuilder {
	t.Helper()
	s := runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(s))
	require.NoError(t, berthv1alpha1.AddToScheme(s))
	org := &berthv1alpha1.Organization{ObjectMeta: metav1.ObjectMeta{Name: "acme"}}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team", Labels: map[string]string{berthv1alpha1.LabelOrg: org.Name}}}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}
	return fake.NewClientBuilder().WithScheme(s).WithObjects(append(objs, ns, org, node)...).
		WithStatusSubresource(&berthv1alpha1.Workspace{}).
		WithIndex(&corev1.Pod{}, indexWorkspace, podWorkspace).WithIndex(&corev1.Pod{}, indexNode, podNode)
}

// A stop that removes its reason from a Workspace the cache has not caught
// up with meets a conflict; that is no error: the newer Workspace's event
// brings another pass.
func TestStopReasonConflictIsNoError(t *testing.T) {
	ws := testWorkspace(3, false)
	ws.Annotations = map[string]string{berthv1alpha1.AnnotationStopReason: string(berthv1alpha1.StoppedIdle)}
	cl := fakeCluster(t, ws).WithInterceptorFuncs(interceptor.Funcs{
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			return apierrors.NewConflict(berthv1alpha1.Resource("workspaces"), obj.GetName(), errors.New("the object has been modified"))
		},
	}).Build()
	c := NewController(cl, cl, events.NewFakeRecorder(10), clocktesting.NewFakeClock(time.Now()), Options{})
	_, err := c.Reconcile(t.Context(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(ws)})
	require.NoError(t, err)
}
