package orgstatus

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/quota"
	"berth.dev/berth/pkg/testutil"
)

func TestLive(t *testing.T) {
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	pod := func(name string, class berthv1alpha1.Class) *testutil.PodBuilder {
		return testutil.Pod(name).Namespace("team").Class(class)
	}
	done := pod("done", berthv1alpha1.ClassWorkspace).Obj()
	done.Status.Phase = corev1.PodSucceeded
	pods := []corev1.Pod{
		*pod("ws-a", berthv1alpha1.ClassWorkspace).Obj(),
		*pod("ws-b", berthv1alpha1.ClassWorkspace).Obj(),
		*pod("vllm", berthv1alpha1.ClassInference).Resource("nvidia.com/gpu", "2").Obj(),
		*pod("build", berthv1alpha1.ClassBuild).Obj(),
		*done,
		*testutil.Pod("plain").Namespace("team").Obj(),
	}
	for i := range pods {
		pods[i].UID = types.UID("uid-x" + pods[i].Name)
	}
	recorded := map[string]quota.Entry{quota.Key("team", "ws-a"): {UID: "uid-xws-a", Class: berthv1alpha1.ClassWorkspace}}

	unlimited := testutil.Org("acme").Obj()
	u, missing := Live(unlimited, pods, recorded, now)
	assert.Equal(t, quota.Usage{Workspaces: 2, GPUs: 2}, u)
	assert.Empty(t, missing, "an org without limits needs no ledger")

	limited := testutil.Org("acme").MaxWorkspaces(10).MaxGPUs(4).Obj()
	u, missing = Live(limited, pods, recorded, now)
	assert.Equal(t, quota.Usage{Workspaces: 2, GPUs: 2}, u)
	assert.Equal(t, map[string]quota.Entry{
		quota.Key("team", "ws-b"): {UID: "uid-xws-b", Class: berthv1alpha1.ClassWorkspace, Admitted: now},
		quota.Key("team", "vllm"): {UID: "uid-xvllm", Class: berthv1alpha1.ClassInference, GPUs: 2, Admitted: now},
	}, missing)
}

// A token entry covers the one Pod that carries its token; a second Pod with
// the same token is charged on its own.
func TestLiveMatchesQuotaTokens(t *testing.T) {
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	ws := func(name, token string) corev1.Pod {
		p := testutil.Pod(name).Namespace("team").Class(berthv1alpha1.ClassWorkspace).Label(berthv1alpha1.LabelQuotaToken, token).Obj()
		p.UID = types.UID("uid-" + name)
		return *p
	}
	pods := []corev1.Pod{ws("ws-a", "tok1"), ws("ws-b", "tok1"), ws("ws-c", "tok2")}
	entries := map[string]quota.Entry{
		quota.TokenKey("team", "tok1"): {UID: "tok1", Class: berthv1alpha1.ClassWorkspace},
		quota.Key("team", "ws-c"):      {UID: "uid-ws-c", Class: berthv1alpha1.ClassWorkspace},
	}
	org := testutil.Org("acme").MaxWorkspaces(10).Obj()
	u, missing := Live(org, pods, entries, now)
	assert.Equal(t, quota.Usage{Workspaces: 3}, u)
	assert.Equal(t, map[string]quota.Entry{
		quota.Key("team", "ws-b"): {UID: "uid-ws-b", Class: berthv1alpha1.ClassWorkspace, Admitted: now},
	}, missing, "ws-c is covered by its name entry, ws-a by the token; ws-b shares ws-a's token")
}
