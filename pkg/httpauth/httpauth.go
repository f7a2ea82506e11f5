// Package httpauth authenticates and authorises callers of berth's own HTTPS
// APIs the way the API server would: a bearer token checked with a
// TokenReview, and the caller's rights with a SubjectAccessReview, so that
// platform teams grant them with plain RBAC.
package httpauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Reviewer asks the API server about callers.
type Reviewer struct {
	Kube kubernetes.Interface
}

// Error is a refusal with its HTTP status.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// Authenticate reviews the request's bearer token and returns the caller.
// With audiences, the token must be made for one of them, as a Pod's
// projected token for berth is; without, for the API server.
func (rv Reviewer) Authenticate(r *http.Request, audiences ...string) (authenticationv1.UserInfo, error) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return authenticationv1.UserInfo{}, &Error{http.StatusUnauthorized, "no bearer token; send Authorization: Bearer <a Kubernetes token, such as a ServiceAccount's>"}
	}
	tr, err := rv.Kube.AuthenticationV1().TokenReviews().Create(r.Context(), &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.UserInfo{}, &Error{http.StatusServiceUnavailable, fmt.Sprintf("review the token: %v", err)}
	}
	if !tr.Status.Authenticated {
		return authenticationv1.UserInfo{}, &Error{http.StatusUnauthorized, "the token is not valid: " + tr.Status.Error}
	}
	if len(audiences) > 0 && !slices.ContainsFunc(tr.Status.Audiences, func(a string) bool { return slices.Contains(audiences, a) }) {
		return authenticationv1.UserInfo{}, &Error{http.StatusUnauthorized, fmt.Sprintf("the token is not made for audience %v", audiences)}
	}
	return tr.Status.User, nil
}

// Authorize asks whether u may do what attrs describe. The refusal names
// the RBAC rule that would allow it.
func (rv Reviewer) Authorize(ctx context.Context, u authenticationv1.UserInfo, attrs authorizationv1.ResourceAttributes) error {
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := rv.Kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra, ResourceAttributes: &attrs,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return &Error{http.StatusServiceUnavailable, fmt.Sprintf("review the caller's rights: %v", err)}
	}
	if sar.Status.Allowed {
		return nil
	}
	where, names := "cluster-wide", ""
	if attrs.Namespace != "" {
		where = fmt.Sprintf("in namespace %q", attrs.Namespace)
	}
	if attrs.Name != "" {
		where = fmt.Sprintf("%q %s", attrs.Name, where)
		names = fmt.Sprintf(", resourceNames: [%s]", attrs.Name)
	}
	return &Error{http.StatusForbidden, fmt.Sprintf("%s may not %s %s.%s %s; grant it with an RBAC rule {apiGroups: [%s], resources: [%s]%s, verbs: [%s]}",
		u.Username, attrs.Verb, attrs.Resource, attrs.Group, where, attrs.Group, attrs.Resource, names, attrs.Verb)}
}

// Fail writes err as a JSON error: its status when it is an *Error, else
// fallback.
func Fail(w http.ResponseWriter, err error, fallback int) {
	status := fallback
	var e *Error
	if errors.As(err, &e) {
		status = e.Status
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
