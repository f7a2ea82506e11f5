package orgstatus

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/quota"
	"berth.dev/berth/pkg/testutil"
)

var now = time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)

func pods() []corev1.Pod {
	pod := func(name string, class berthv1alpha1.Class) *testutil.PodBuilder {
		return testutil.Pod(name).Namespace("team").Class(class)
	}
	done := pod("done", berthv1alpha1.ClassWorkspace).Obj()
	done.Status.Phase = corev1.PodSucceeded
	ps := []corev1.Pod{
		*pod("ws-a", berthv1alpha1.ClassWorkspace).Obj(),
		*pod("ws-b", berthv1alpha1.ClassWorkspace).Obj(),
		*pod("vllm", berthv1alpha1.ClassInference).Resource("nvidia.com/gpu", "2").Obj(),
		*pod("build", berthv1alpha1.ClassBuild).Resource("nvidia.com/gpu", "1").Obj(),
		*done,
		*testutil.Pod("plain").Namespace("team").Obj(),
	}
	for i := range ps {
		ps[i].UID = types.UID("uid-" + ps[i].Name)
	}
	return ps
}

func TestLive(t *testing.T) {
	recorded := map[types.UID]quota.Entry{"uid-ws-a": {Class: berthv1alpha1.ClassWorkspace}}

	u, missing := Live(testutil.Org("acme").Obj(), pods(), recorded, now)
	assert.Equal(t, quota.Usage{Workspaces: 2, GPUs: 3}, u, "builds' GPUs count too")
	assert.Empty(t, missing, "an org without limits charges nothing")

	u, missing = Live(testutil.Org("acme").MaxWorkspaces(10).MaxGPUs(8).Obj(), pods(), recorded, now)
	assert.Equal(t, quota.Usage{Workspaces: 2, GPUs: 3}, u)
	assert.Equal(t, map[types.UID]quota.Entry{
		"uid-ws-b":  {Class: berthv1alpha1.ClassWorkspace, Admitted: now},
		"uid-vllm":  {Class: berthv1alpha1.ClassInference, GPUs: 2, Admitted: now},
		"uid-build": {Class: berthv1alpha1.ClassBuild, GPUs: 1, Admitted: now},
	}, missing)
}

func TestJudge(t *testing.T) {
	c := NewController(nil, nil, nil, clocktesting.NewFakeClock(now))
	c.gone.Store(types.UID("deleted"), now)
	ps := pods()
	ps[0].Status.Phase = corev1.PodFailed // ws-a
	entries := map[types.UID]quota.Entry{
		"uid-ws-a": {Admitted: now.Add(-time.Hour)},
		"uid-ws-b": {Admitted: now.Add(-time.Hour)},
		"deleted":  {Admitted: now},
		"young":    {Admitted: now.Add(-4 * time.Second)},
		"old":      {Admitted: now.Add(-Grace)},
	}
	stale, unseen, wait := c.judge(entries, ps, now)
	assert.ElementsMatch(t, []types.UID{"uid-ws-a", "deleted"}, stale)
	assert.Equal(t, []types.UID{"old"}, unseen)
	assert.Equal(t, Grace-4*time.Second+time.Second, wait)
}
