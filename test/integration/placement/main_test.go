// Package placement tests berth-scheduler, the real binary with the
// BerthPlacement plugin, placing Pods that berth's webhooks labelled, on the
// local cluster's fake pools.
package placement

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"berth.dev/berth/test/framework"
)

func TestMain(m *testing.M) { framework.Main(m) }

var once sync.Once

// setup returns the cluster with berth-manager (webhooks writing
// schedulerName berth-scheduler) and berth-scheduler running.
func setup(t *testing.T) *framework.ClusterEnv {
	env := framework.Cluster(t)
	once.Do(func() {
		framework.StartPackageManager(t, env, framework.ManagerOptions{Args: []string{"--controllers="}})
		framework.StartPackageScheduler(t, env, nil)
	})
	return env
}

// bound waits until the Pod is bound and returns its node.
func bound(t *testing.T, env *framework.ClusterEnv, pod *corev1.Pod) *corev1.Node {
	t.Helper()
	framework.Eventually(t, 30*time.Second, "pod "+pod.Name+" to be bound", func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return pod.Spec.NodeName != "", err
	})
	node := &corev1.Node{}
	if err := env.Client.Get(t.Context(), client.ObjectKey{Name: pod.Spec.NodeName}, node); err != nil {
		t.Fatal(err)
	}
	return node
}
