package webhooks

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/placement"
)

// DefaultSchedulerName is berth-scheduler's schedulerName.
const DefaultSchedulerName = "berth-scheduler"

// Config is what the platform team sets for the webhooks.
type Config struct {
	// SchedulerName is written into labelled Pods; empty keeps the Pod's.
	SchedulerName string
	// Keys are the node labels and taints placement uses.
	Keys placement.Keys
	// Namespace is berth's own namespace: never handled; the quota ledgers
	// live there.
	Namespace string
	// PriorityClassPrefix names the PriorityClass of each class:
	// {prefix}{class}, such as berth-build. Used when it exists.
	PriorityClassPrefix string
	// ManagerUsername is the user berth-manager's controllers act as; only
	// it may release a queued build.
	ManagerUsername string
	// BlobImage is the berth-blob image injected into builds of a project
	// (default DefaultBlobImage).
	BlobImage string
	// BlobManagerURL is where berth-blob in a build Pod asks berth-manager
	// for its blob URLs, proving who it is with the Pod's projected token.
	BlobManagerURL string
	// BlobManagerCAFile is the PEM of the CA berth-manager's serving
	// certificate is signed by, passed to build Pods; empty trusts the
	// system's roots.
	BlobManagerCAFile string
	// BlobCredentialsInPods passes the org's connection-string Secret, from
	// the build's own namespace, into its Pods instead: the data path as it
	// was before berth-manager held the credential. For local development
	// only: any build could then read and overwrite every blob of the
	// account.
	BlobCredentialsInPods bool
	// WorkspaceNodeLossSeconds is how long a workspace stays bound to a
	// not-ready or unreachable node before it is evicted and berth starts
	// it elsewhere (the not-ready and unreachable tolerationSeconds). Zero
	// keeps the API server's default of 300 s.
	WorkspaceNodeLossSeconds int64
	// MeteringFinalizer adds berthv1alpha1.FinalizerMetering to every
	// labelled Pod at its create, so that berth-meter charges a Pod it
	// never saw run (created and deleted while it was down). Only with
	// berth-meter installed: without it, the Pods are never deleted.
	MeteringFinalizer bool
}

// DefaultWorkspaceNodeLossSeconds is WorkspaceNodeLossSeconds' default.
const DefaultWorkspaceNodeLossSeconds = 30

// Resolver finds what a decision needs: the org of a namespace and the
// priority class of a class. It reads through a cache, and asks the API
// server when the cache has not seen an object yet (a namespace created a
// moment ago).
type Resolver struct {
	Reader    client.Reader
	APIReader client.Reader
	Config    Config
}

func (r *Resolver) get(ctx context.Context, key client.ObjectKey, obj client.Object) error {
	err := r.Reader.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) && r.APIReader != nil {
		err = r.APIReader.Get(ctx, key, obj)
	}
	return err
}

// Target resolves the Target of an object of class in namespace ns: the
// org always comes from the namespace's label, never from the object. A nil
// error with a nil Target never happens.
func (r *Resolver) Target(ctx context.Context, ns string, class berthv1alpha1.Class, path *field.Path) (*Target, *field.Error) {
	var nsObj corev1.Namespace
	if err := r.get(ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil {
		return nil, field.InternalError(path.Child("namespace"), fmt.Errorf("read namespace %s: %w", ns, err))
	}
	orgName := nsObj.Labels[berthv1alpha1.LabelOrg]
	if orgName == "" {
		return nil, field.Invalid(path.Child("namespace"), ns, fmt.Sprintf(
			"namespace %s has no %s label, so berth cannot tell which Organization it belongs to; ask the platform team to run: kubectl label namespace %s %s=<org>",
			ns, berthv1alpha1.LabelOrg, ns, berthv1alpha1.LabelOrg))
	}
	org := &berthv1alpha1.Organization{}
	if err := r.get(ctx, client.ObjectKey{Name: orgName}, org); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, field.Invalid(path.Child("namespace"), ns, fmt.Sprintf(
				"namespace %s belongs to Organization %q (label %s), which does not exist; ask the platform team to create it or fix the label",
				ns, orgName, berthv1alpha1.LabelOrg))
		}
		return nil, field.InternalError(path.Child("namespace"), fmt.Errorf("read Organization %s: %w", orgName, err))
	}
	t := &Target{Class: class, Org: org, Config: r.Config}
	if r.Config.PriorityClassPrefix != "" {
		var pcs schedulingv1.PriorityClassList
		if err := r.Reader.List(ctx, &pcs); err != nil {
			return nil, field.InternalError(path.Child("spec", "priorityClassName"), err)
		}
		for i := range pcs.Items {
			pc := &pcs.Items[i]
			if pc.Name == r.Config.PriorityClassPrefix+string(class) {
				t.PriorityClass = pc
			}
			if pc.GlobalDefault {
				t.GlobalDefaultPriorityClass = pc.Name
			}
		}
	}
	return t, nil
}

// OrgName returns the Organization namespace ns belongs to, "" when it has
// none or the Organization does not exist: metrics label by it, and only
// the platform team creates Organizations, so its values stay few.
func (r *Resolver) OrgName(ctx context.Context, ns string) string {
	var nsObj corev1.Namespace
	if err := r.get(ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil {
		return ""
	}
	name := nsObj.Labels[berthv1alpha1.LabelOrg]
	if name == "" || r.get(ctx, client.ObjectKey{Name: name}, &berthv1alpha1.Organization{}) != nil {
		return ""
	}
	return name
}

// Skipped reports whether berth never handles objects in namespace ns.
func (c Config) Skipped(ns string) bool {
	return ns == "kube-system" || ns == "kube-node-lease" || ns == "kube-public" || (c.Namespace != "" && ns == c.Namespace)
}
