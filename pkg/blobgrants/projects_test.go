package blobgrants

import (
	"testing"

	"github.com/stretchr/testify/assert"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
)

func org(name, account string, projects ...berthv1alpha1.BlobProject) berthv1alpha1.Organization {
	return *testutil.Org(name).Blob(berthv1alpha1.BlobSettings{AccountURL: account, Projects: projects}).Obj()
}

func TestCheckProject(t *testing.T) {
	const shared, own = "https://shared.blob.core.windows.net", "https://own.blob.core.windows.net"
	shop := berthv1alpha1.BlobProject{Name: "shop"}
	shopInCI := berthv1alpha1.BlobProject{Name: "shop", Namespaces: []string{"ci"}}
	cases := []struct {
		name    string
		org     berthv1alpha1.Organization
		others  []berthv1alpha1.Organization
		project string
		ns      string
		wantErr string
	}{
		{name: "an org alone on its account uses any project", org: org("a", own), project: "shop", ns: "dev"},
		{name: "a listed project", org: org("a", own, shop), project: "shop", ns: "dev"},
		{name: "a project the org does not list", org: org("a", own, shop), project: "bank", ns: "dev", wantErr: `project "bank" is not one of Organization "a"'s`},
		{name: "a listed project from its namespace", org: org("a", own, shopInCI), project: "shop", ns: "ci"},
		{name: "a listed project from another namespace", org: org("a", own, shopInCI), project: "shop", ns: "dev", wantErr: "from namespaces [ci] only, not dev"},
		{name: "two open orgs on one account and container", org: org("a", shared), others: []berthv1alpha1.Organization{org("b", shared)},
			project: "shop", ns: "dev", wantErr: `could name the blobs of Organization "b" too`},
		{name: "a project the other org lists", org: org("a", shared, shop), others: []berthv1alpha1.Organization{org("b", shared, shop)},
			project: "shop", ns: "dev", wantErr: `Organization "b"`},
		{name: "disjoint projects on a shared account", org: org("a", shared, shop),
			others: []berthv1alpha1.Organization{org("b", shared, berthv1alpha1.BlobProject{Name: "bank"})}, project: "shop", ns: "dev"},
		{name: "an open org beside one that lists others", org: org("a", shared),
			others: []berthv1alpha1.Organization{org("b", shared, berthv1alpha1.BlobProject{Name: "bank"})}, project: "shop", ns: "dev"},
		{name: "an open org may not take what another lists", org: org("a", shared),
			others: []berthv1alpha1.Organization{org("b", shared, berthv1alpha1.BlobProject{Name: "bank"})}, project: "bank", ns: "dev", wantErr: `Organization "b"`},
		{name: "the same account with other containers", org: org("a", shared), others: []berthv1alpha1.Organization{
			*testutil.Org("b").Blob(berthv1alpha1.BlobSettings{AccountURL: shared + "/", UploadsContainer: "b-up", ProjectsContainer: "b-proj", ArtifactsContainer: "b-art"}).Obj()},
			project: "shop", ns: "dev"},
		{name: "an org without blob settings", org: org("a", shared), others: []berthv1alpha1.Organization{*testutil.Org("b").Obj()}, project: "shop", ns: "dev"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			all := append([]berthv1alpha1.Organization{tc.org}, tc.others...)
			for i := range all {
				if all[i].Spec.Blob != nil {
					bs := all[i].Spec.Blob.WithDefaults()
					all[i].Spec.Blob = &bs
				}
			}
			err := CheckProject(&all[0], all, tc.project, tc.ns)
			if tc.wantErr == "" {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, tc.wantErr)
			}
		})
	}
}
