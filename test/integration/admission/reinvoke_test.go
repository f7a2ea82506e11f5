package admission

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/quota"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// A mutating webhook called after berth's that changes the Pod makes the
// API server call berth's again. The charge is taken once, by the
// validating webhook, keyed by the Pod's UID: the org ends charged once per
// Pod, with no slot to release later.
func TestReinvokedWorkspaceIsChargedOnce(t *testing.T) {
	env := setup(t)
	org := newOrg(t, env, testutil.Org(orgName()).MaxWorkspaces(1000))
	// Not restricted: the later webhook's probe is a plain Pod.
	ns := env.Namespace(t, org.Name)
	later := laterWebhook(t, env, ns)

	for i := range 3 {
		env.Create(t, testutil.Pod(fmt.Sprintf("ws-%d", i)).Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj())
	}
	var pods corev1.PodList
	require.NoError(t, env.Client.List(t.Context(), &pods, client.InNamespace(ns)))
	uids := map[string]bool{}
	for _, p := range pods.Items {
		assert.Equal(t, "yes", p.Annotations[laterAnnotation], "the later webhook changed %s", p.Name)
		uids[string(p.UID)] = true
	}
	assert.GreaterOrEqual(t, later.calls.Load(), int64(3), "the later webhook was called for every Pod")

	cm := &corev1.ConfigMap{}
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Namespace: "berth-system", Name: quota.Name(org.Name)}, cm))
	var charged []string
	for line := range strings.Lines(cm.Data[quota.DataKey]) {
		charged = append(charged, strings.Fields(line)[0])
	}
	require.Len(t, charged, 3, "one entry per Pod")
	for _, uid := range charged {
		assert.True(t, uids[uid], "entry %s is a Pod's UID", uid)
	}
	framework.Eventually(t, 30*time.Second, "status.workspaces = 3", func(ctx context.Context) (bool, error) {
		got := &berthv1alpha1.Organization{}
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(org), got)
		return got.Status.Workspaces == 3, err
	})
}

const laterAnnotation = "test.berth.dev/later"

// laterHook is a mutating webhook that runs after berth's (its
// configuration's name sorts after berth's) and adds an annotation.
type laterHook struct{ calls atomic.Int64 }

// laterWebhook registers a mutating webhook, served by this test on
// 127.0.0.1, for labelled Pods of namespace ns, until the test ends.
func laterWebhook(t *testing.T, env *framework.ClusterEnv, ns string) *laterHook {
	h := &laterHook{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.calls.Add(1)
		var pod corev1.Pod
		resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
		if err := json.Unmarshal(review.Request.Object.Raw, &pod); err == nil && pod.Annotations[laterAnnotation] == "" {
			var patch []map[string]any
			if pod.Annotations == nil {
				patch = append(patch, map[string]any{"op": "add", "path": "/metadata/annotations", "value": map[string]string{}})
			}
			patch = append(patch, map[string]any{"op": "add", "path": "/metadata/annotations/" + strings.ReplaceAll(laterAnnotation, "/", "~1"), "value": "yes"})
			resp.Patch, _ = json.Marshal(patch)
			resp.PatchType = ptr.To(admissionv1.PatchTypeJSONPatch)
		}
		review.Response = resp
		review.Request = nil
		_ = json.NewEncoder(w).Encode(&review)
	}))
	t.Cleanup(srv.Close)
	caBundle := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "zz-later-" + ns},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "later.test.berth.dev",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To(srv.URL + "/mutate"), CABundle: caBundle},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.NeverReinvocationPolicy),
		}},
	}
	env.Create(t, cfg)
	// The API server picks a new configuration up within a moment.
	framework.Eventually(t, 30*time.Second, "the later webhook in use", func(ctx context.Context) (bool, error) {
		p := testutil.Pod("probe").Namespace(ns).Obj()
		if err := env.Client.Create(ctx, p, client.DryRunAll); err != nil {
			return false, err
		}
		return p.Annotations[laterAnnotation] == "yes", nil
	})
	return h
}
