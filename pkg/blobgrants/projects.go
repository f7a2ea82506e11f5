package blobgrants

import (
	"fmt"
	"slices"
	"strings"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// CheckProject says whether org's builds in namespace ns may use project,
// given every Organization.
//
// An org that lists spec.blob.projects may use those, each from the
// namespaces it names (any of the org's when it names none). An org that
// lists none may use any project. Either way, a project is refused when
// another org on the same account and a same container could use it too:
// blob names hold no org, so two orgs sharing a container must own
// disjoint projects, and the platform team says which by listing them.
func CheckProject(org *berthv1alpha1.Organization, all []berthv1alpha1.Organization, project, ns string) error {
	if !claims(org, project) {
		return fmt.Errorf("project %q is not one of Organization %q's (spec.blob.projects); ask the platform team to add it", project, org.Name)
	}
	if p := listed(org, project); p != nil && len(p.Namespaces) > 0 && !slices.Contains(p.Namespaces, ns) {
		return fmt.Errorf("project %q of Organization %q is used from namespaces %v only, not %s (spec.blob.projects)", project, org.Name, p.Namespaces, ns)
	}
	for i := range all {
		other := &all[i]
		if other.Name == org.Name || other.Spec.Blob == nil || !claims(other, project) {
			continue
		}
		if c := shared(org.Spec.Blob.WithDefaults(), other.Spec.Blob.WithDefaults()); c != "" {
			return fmt.Errorf("project %q could name the blobs of Organization %q too: both use container %q of %s; list each org's projects in spec.blob.projects so that none is in both, or give them their own containers",
				project, other.Name, c, org.Spec.Blob.AccountURL)
		}
	}
	return nil
}

// claims reports whether org may use project: it lists it, or lists none.
func claims(org *berthv1alpha1.Organization, project string) bool {
	return len(org.Spec.Blob.Projects) == 0 || listed(org, project) != nil
}

func listed(org *berthv1alpha1.Organization, project string) *berthv1alpha1.BlobProject {
	for i := range org.Spec.Blob.Projects {
		if org.Spec.Blob.Projects[i].Name == project {
			return &org.Spec.Blob.Projects[i]
		}
	}
	return nil
}

// shared returns a container a and b both use on the same account, or "".
func shared(a, b berthv1alpha1.BlobSettings) string {
	if !strings.EqualFold(strings.TrimSuffix(a.AccountURL, "/"), strings.TrimSuffix(b.AccountURL, "/")) {
		return ""
	}
	for _, c := range []string{a.UploadsContainer, a.ProjectsContainer, a.ArtifactsContainer} {
		if c == b.UploadsContainer || c == b.ProjectsContainer || c == b.ArtifactsContainer {
			return c
		}
	}
	return ""
}
