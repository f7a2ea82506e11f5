package workspaces

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/httpauth"
)

// APIPattern is the path of the workspace API, served by berth-manager
// beside its webhooks: POST wake, stop or touch.
const APIPattern = "POST /v1/namespaces/{namespace}/workspaces/{name}/{action}"

// MaxWait caps the wait a caller may ask for.
const MaxWait = 2 * time.Minute

// API lets an IDE gateway, or any client with a Kubernetes token, wake,
// stop and touch a workspace. The caller must be allowed to update that
// Workspace (TokenReview, then SubjectAccessReview); berth-manager then
// makes the change, so the caller needs no rights on Pods.
type API struct {
	Client   client.Client
	Reviewer httpauth.Reviewer
	Clock    clock.PassiveClock
}

// ServeHTTP handles APIPattern.
//
//	wake   sets spec.started; ?wait=30s answers once the workspace runs,
//	       or with 409 and admission's message when its start is refused.
//	stop   clears spec.started (berth records stoppedBy user).
//	touch  records activity now, or at ?at=RFC3339 (no later than now).
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ns, name, action := r.PathValue("namespace"), r.PathValue("name"), r.PathValue("action")
	if action != "wake" && action != "stop" && action != "touch" {
		httpauth.Fail(w, &httpauth.Error{Status: http.StatusNotFound, Msg: fmt.Sprintf("action %q is unknown; use wake, stop or touch", action)}, 0)
		return
	}
	var waitFor time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > MaxWait {
			httpauth.Fail(w, &httpauth.Error{Status: http.StatusBadRequest, Msg: fmt.Sprintf("wait=%q is not a duration between 0s and %s; use for example wait=30s", v, MaxWait)}, 0)
			return
		}
		waitFor = d
	}
	at := a.Clock.Now()
	if v := r.URL.Query().Get("at"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil || t.After(at.Add(MaxClockSkew)) {
			httpauth.Fail(w, &httpauth.Error{Status: http.StatusBadRequest, Msg: fmt.Sprintf("at=%q is not an RFC 3339 time no later than now, such as %s", v, at.UTC().Format(time.RFC3339))}, 0)
			return
		}
		at = t
	}
	user, err := a.Reviewer.Authenticate(r)
	if err != nil {
		httpauth.Fail(w, err, http.StatusUnauthorized)
		return
	}
	err = a.Reviewer.Authorize(r.Context(), user, authorizationv1.ResourceAttributes{
		Namespace: ns, Verb: "update", Group: berthv1alpha1.GroupName, Resource: "workspaces", Name: name,
	})
	if err != nil {
		httpauth.Fail(w, err, http.StatusForbidden)
		return
	}
	ws, err := a.act(r.Context(), ns, name, action, at)
	if err != nil {
		httpauth.Fail(w, err, http.StatusInternalServerError)
		return
	}
	status := http.StatusOK
	if action == "wake" && waitFor > 0 {
		ws, err = a.waitRunning(r.Context(), ws, waitFor)
		switch {
		case err != nil:
			status = http.StatusGatewayTimeout
		case meta.IsStatusConditionTrue(ws.Status.Conditions, conditionStartFailed) && ws.Status.Phase != berthv1alpha1.WorkspaceRunning:
			status = http.StatusConflict
		}
	} else if action == "wake" && ws.Status.Phase != berthv1alpha1.WorkspaceRunning {
		status = http.StatusAccepted
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(berthv1alpha1.WorkspaceAnswer{
		Namespace: ws.Namespace, Name: ws.Name, Started: ws.Spec.Started, Phase: ws.Status.Phase,
		PodName: ws.Status.PodName, NodeName: ws.Status.NodeName, Message: ws.Status.Message,
	})
}

// act makes the change on the Workspace.
func (a *API) act(ctx context.Context, ns, name, action string, at time.Time) (*berthv1alpha1.Workspace, error) {
	ws := &berthv1alpha1.Workspace{}
	if err := a.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ws); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &httpauth.Error{Status: http.StatusNotFound, Msg: fmt.Sprintf("workspace %q does not exist in namespace %q; kubectl get workspaces -n %s lists them", name, ns, ns)}
		}
		return nil, err
	}
	patch := client.MergeFrom(ws.DeepCopy())
	switch action {
	case "wake":
		if ws.Spec.Started {
			return ws, nil
		}
		ws.Spec.Started = true
		// The last stop's reason is spent.
		delete(ws.Annotations, berthv1alpha1.AnnotationStopReason)
	case "stop":
		if !ws.Spec.Started {
			return ws, nil
		}
		ws.Spec.Started = false
		metav1.SetMetaDataAnnotation(&ws.ObjectMeta, berthv1alpha1.AnnotationStopReason, string(berthv1alpha1.StoppedUser))
	case "touch":
		metav1.SetMetaDataAnnotation(&ws.ObjectMeta, berthv1alpha1.AnnotationLastActivity, at.UTC().Format(time.RFC3339))
	}
	if err := a.Client.Patch(ctx, ws, patch); err != nil {
		return nil, fmt.Errorf("%s workspace %s/%s: %w", action, ns, name, err)
	}
	return ws, nil
}

// waitRunning waits until the started workspace's Pod runs, or its start
// is refused after the wake. It answers from the Pod as soon as it runs:
// the status records it a moment later (runningSettle).
func (a *API) waitRunning(ctx context.Context, ws *berthv1alpha1.Workspace, d time.Duration) (*berthv1alpha1.Workspace, error) {
	since := ws.Generation
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, d, true, func(ctx context.Context) (bool, error) {
		got := &berthv1alpha1.Workspace{}
		if err := a.Client.Get(ctx, client.ObjectKeyFromObject(ws), got); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		ws = got
		if got.Status.Phase == berthv1alpha1.WorkspaceRunning {
			return true, nil
		}
		pod := &corev1.Pod{}
		err := a.Client.Get(ctx, client.ObjectKey{Namespace: got.Namespace, Name: startName(got)}, pod)
		if err != nil && !apierrors.IsNotFound(err) {
			return false, err
		}
		if err == nil && got.Spec.Started && OwnedBy(pod, got) && !podGoing(pod) && pod.Status.Phase == corev1.PodRunning {
			ws = got.DeepCopy()
			ws.Status.Phase, ws.Status.PodName, ws.Status.NodeName, ws.Status.Message = berthv1alpha1.WorkspaceRunning, pod.Name, pod.Spec.NodeName, ""
			return true, nil
		}
		// berth ends a refused wake by clearing spec.started.
		return !got.Spec.Started && got.Generation > since, nil
	})
	return ws, err
}
