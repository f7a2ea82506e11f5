// Package blobgrants is berth-manager's side of the build data path's
// trust model: it holds the storage credential, and hands a build Pod SAS
// URLs of its own project's blobs only.
//
// A build Pod's berth-blob asks for one blob at a time (blob.GrantPath).
// It proves who it is with its projected ServiceAccount token, whose
// audience is blob.TokenAudience; the API server binds that token to the
// Pod, and a TokenReview names the Pod and its UID. berth-manager then
// reads the Pod from the API server and checks that it is a live build of
// a project its namespace's Organization may use, and that the blob is one
// a build of that project reads (its sources) or writes (its log, result
// and artifacts). The URL it signs opens that one blob, with that one
// access, for about the Pod's remaining life and at most MaxTTL.
package blobgrants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/blob"
	"berth.dev/berth/pkg/controllers"
	"berth.dev/berth/pkg/httpauth"
)

// Pattern is the endpoint, served beside the webhooks.
const Pattern = "POST " + blob.GrantPath

// DefaultMaxTTL is the longest a grant lives. berth-blob asks for each
// URL when it needs it, so a long build needs no long-lived URL.
const DefaultMaxTTL = time.Hour

// The extra fields a TokenReview gives for a token bound to a Pod.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// Signer signs a URL of one blob; blob.AzureStore is the real one.
type Signer interface {
	SignURL(ctx context.Context, container, name string, perms sas.BlobPermissions, expiry time.Time) (string, error)
}

// Handler serves Pattern.
type Handler struct {
	// Client reads Namespaces and Organizations (a cache is fine).
	Client client.Reader
	// Reader reads Pods and Secrets from the API server: a grant is
	// decided on the Pod as it is now.
	Reader   client.Reader
	Reviewer httpauth.Reviewer
	// Namespace is berth's own, which holds the orgs' credentials Secrets.
	Namespace string
	Clock     clock.PassiveClock
	// MaxTTL caps a grant's life (default DefaultMaxTTL).
	MaxTTL time.Duration
	// NewSigner opens an account: with a connection string, or with
	// berth-manager's own workload identity when it is empty. Default
	// blob.NewAzureStore.
	NewSigner func(accountURL, connectionString string) (Signer, error)

	mu       sync.Mutex
	identity map[string]Signer
}

// ServeHTTP answers one GrantRequest with a blob.Grant, or a refusal that
// says why.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req blob.GrantRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 8<<10)).Decode(&req); err != nil {
		h.fail(w, r, req, &httpauth.Error{Status: http.StatusBadRequest, Msg: fmt.Sprintf("the body is not a grant request {container, name, access}: %v", err)})
		return
	}
	g, err := h.grant(r, req)
	if err != nil {
		h.fail(w, r, req, err)
		return
	}
	grants.WithLabelValues(string(req.Access), "granted").Inc()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(g)
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, req blob.GrantRequest, err error) {
	result := "refused"
	var he *httpauth.Error
	if !errors.As(err, &he) || he.Status >= 500 {
		result = "error"
	}
	grants.WithLabelValues(metricAccess(req.Access), result).Inc()
	ctrl.LoggerFrom(r.Context()).WithName("blobgrants").Info("grant not given",
		"container", req.Container, "name", req.Name, "access", req.Access, "err", err.Error())
	httpauth.Fail(w, err, http.StatusInternalServerError)
}

func metricAccess(a blob.Access) string {
	if a == blob.AccessRead || a == blob.AccessWrite {
		return string(a)
	}
	return "unknown"
}

func refuse(format string, args ...any) error {
	return &httpauth.Error{Status: http.StatusForbidden, Msg: fmt.Sprintf(format, args...)}
}

// grant decides and signs.
func (h *Handler) grant(r *http.Request, req blob.GrantRequest) (blob.Grant, error) {
	ctx := r.Context()
	user, err := h.Reviewer.Authenticate(r, blob.TokenAudience)
	if err != nil {
		return blob.Grant{}, err
	}
	pod, err := h.pod(ctx, user)
	if err != nil {
		return blob.Grant{}, err
	}
	who := fmt.Sprintf("Pod %s/%s", pod.Namespace, pod.Name)
	if pod.Labels[berthv1alpha1.LabelClass] != string(berthv1alpha1.ClassBuild) {
		return blob.Grant{}, refuse("%s is not a build (label %s=%s); only builds get blob grants", who, berthv1alpha1.LabelClass, berthv1alpha1.ClassBuild)
	}
	project := pod.Labels[berthv1alpha1.LabelProject]
	if err := blob.ValidateProject(project); err != nil {
		return blob.Grant{}, refuse("%s: label %s: %v", who, berthv1alpha1.LabelProject, err)
	}
	bs, err := h.project(ctx, project, pod.Namespace, who)
	if err != nil {
		return blob.Grant{}, err
	}
	if err := blob.CheckBuildAccess(containers(bs), project, req); err != nil {
		return blob.Grant{}, refuse("%s: %v", who, err)
	}
	// The account's credentials are read only for a grant that will be
	// given.
	signer, err := h.signer(ctx, bs)
	if err != nil {
		return blob.Grant{}, err
	}
	perms := sas.BlobPermissions{Read: true}
	if req.Access == blob.AccessWrite {
		perms = blob.WritePermissions
	}
	expiry := h.Clock.Now().Add(h.ttl(pod)).Truncate(time.Second)
	u, err := signer.SignURL(ctx, req.Container, req.Name, perms, expiry)
	if err != nil {
		return blob.Grant{}, &httpauth.Error{Status: http.StatusServiceUnavailable, Msg: fmt.Sprintf("sign a URL of %s/%s: %v", req.Container, req.Name, err)}
	}
	return blob.Grant{URL: u, Expiry: expiry}, nil
}

// project checks that builds in namespace ns may use project, and returns
// the org's blob settings, defaults filled in. who names the caller in
// refusals.
func (h *Handler) project(ctx context.Context, project, ns, who string) (berthv1alpha1.BlobSettings, error) {
	orgName, err := controllers.NamespaceOrg(ctx, h.Client, ns)
	if err != nil {
		return berthv1alpha1.BlobSettings{}, &httpauth.Error{Status: http.StatusServiceUnavailable, Msg: fmt.Sprintf("read namespace %s: %v", ns, err)}
	}
	if orgName == "" {
		return berthv1alpha1.BlobSettings{}, refuse("namespace %s belongs to no Organization (label %s)", ns, berthv1alpha1.LabelOrg)
	}
	var orgs berthv1alpha1.OrganizationList
	if err := h.Client.List(ctx, &orgs); err != nil {
		return berthv1alpha1.BlobSettings{}, &httpauth.Error{Status: http.StatusServiceUnavailable, Msg: fmt.Sprintf("list Organizations: %v", err)}
	}
	i := slices.IndexFunc(orgs.Items, func(o berthv1alpha1.Organization) bool { return o.Name == orgName })
	if i < 0 || orgs.Items[i].Spec.Blob == nil {
		return berthv1alpha1.BlobSettings{}, refuse("Organization %q of namespace %s has no spec.blob; the platform team sets where its builds' blobs live", orgName, ns)
	}
	org := &orgs.Items[i]
	if err := CheckProject(org, orgs.Items, project, ns); err != nil {
		return berthv1alpha1.BlobSettings{}, refuse("%s: %v", who, err)
	}
	return org.Spec.Blob.WithDefaults(), nil
}

// containers are the org's three containers.
func containers(bs berthv1alpha1.BlobSettings) blob.Containers {
	return blob.Containers{Uploads: bs.UploadsContainer, Projects: bs.ProjectsContainer, Artifacts: bs.ArtifactsContainer}
}

// pod reads, from the API server, the Pod a token was bound to.
func (h *Handler) pod(ctx context.Context, user authenticationv1.UserInfo) (*corev1.Pod, error) {
	rest, ok := strings.CutPrefix(user.Username, "system:serviceaccount:")
	ns, _, ok2 := strings.Cut(rest, ":")
	name, uid := first(user.Extra[extraPodName]), first(user.Extra[extraPodUID])
	if !ok || !ok2 || name == "" || uid == "" {
		return nil, &httpauth.Error{Status: http.StatusUnauthorized, Msg: fmt.Sprintf("%s did not show a token bound to a Pod; berth-blob sends the projected token the admission webhook mounts at %s", user.Username, blob.DefaultTokenFile)}
	}
	pod := &corev1.Pod{}
	if err := h.Reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, pod); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, refuse("Pod %s/%s, which the token was made for, no longer exists", ns, name)
		}
		return nil, &httpauth.Error{Status: http.StatusServiceUnavailable, Msg: fmt.Sprintf("read Pod %s/%s: %v", ns, name, err)}
	}
	if string(pod.UID) != uid {
		return nil, refuse("Pod %s/%s, which the token was made for, was deleted; a Pod of that name now has another UID", ns, name)
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil, refuse("Pod %s/%s has finished (%s)", ns, name, pod.Status.Phase)
	}
	return pod, nil
}

func first(v authenticationv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// ttl is how long a grant for pod lives: MaxTTL, or less when the Pod's
// active deadline (and its grace period to deliver) ends sooner.
func (h *Handler) ttl(pod *corev1.Pod) time.Duration {
	ttl := h.MaxTTL
	if ttl <= 0 {
		ttl = DefaultMaxTTL
	}
	if d := pod.Spec.ActiveDeadlineSeconds; d != nil && pod.Status.StartTime != nil {
		grace := 30 * time.Second
		if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
			grace = time.Duration(*g) * time.Second
		}
		end := pod.Status.StartTime.Add(time.Duration(*d)*time.Second + grace)
		ttl = min(ttl, max(end.Sub(h.Clock.Now()), time.Minute))
	}
	return ttl
}

// signer opens the org's account: with the connection string of its
// credentials Secret in berth's namespace, or with berth-manager's own
// workload identity, kept so its tokens are reused.
func (h *Handler) signer(ctx context.Context, bs berthv1alpha1.BlobSettings) (Signer, error) {
	newSigner := h.NewSigner
	if newSigner == nil {
		newSigner = func(accountURL, cs string) (Signer, error) {
			return blob.NewAzureStore(blob.StoreOptions{AccountURL: accountURL, ConnectionString: cs})
		}
	}
	if ref := bs.CredentialsSecret; ref != nil {
		key := ref.Key
		if key == "" {
			key = berthv1alpha1.DefaultCredentialsKey
		}
		secret := &corev1.Secret{}
		if err := h.Reader.Get(ctx, types.NamespacedName{Namespace: h.Namespace, Name: ref.Name}, secret); err != nil {
			return nil, &httpauth.Error{Status: http.StatusServiceUnavailable, Msg: fmt.Sprintf(
				"read the org's credentials Secret %s/%s: %v; spec.blob.credentialsSecret names a Secret in berth's namespace", h.Namespace, ref.Name, err)}
		}
		cs := string(secret.Data[key])
		if cs == "" {
			return nil, &httpauth.Error{Status: http.StatusServiceUnavailable, Msg: fmt.Sprintf("Secret %s/%s has no key %q", h.Namespace, ref.Name, key)}
		}
		s, err := newSigner(bs.AccountURL, cs)
		if err != nil {
			return nil, &httpauth.Error{Status: http.StatusServiceUnavailable, Msg: fmt.Sprintf("Secret %s/%s: %v", h.Namespace, ref.Name, err)}
		}
		return s, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.identity[bs.AccountURL]; ok {
		return s, nil
	}
	s, err := newSigner(bs.AccountURL, "")
	if err != nil {
		return nil, &httpauth.Error{Status: http.StatusServiceUnavailable, Msg: fmt.Sprintf("open %s with berth-manager's identity: %v", bs.AccountURL, err)}
	}
	if h.identity == nil {
		h.identity = map[string]Signer{}
	}
	h.identity[bs.AccountURL] = s
	return s, nil
}
