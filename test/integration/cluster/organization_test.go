package cluster

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

func TestOrganizationIsServedWithDefaults(t *testing.T) {
	env := framework.Cluster(t)
	name := "acme-" + rand.String(5)
	org := testutil.Org(name).MaxWorkspaces(100).MaxConcurrentBuilds(20).MaxGPUs(8).
		ClassDefault(berthv1alpha1.ClassWorkspace, "1", "2Gi").
		ClassMax(berthv1alpha1.ClassWorkspace, "2", "4Gi").
		Blob(berthv1alpha1.BlobSettings{AccountURL: "https://acme.blob.core.windows.net"}).Obj()
	env.Create(t, org)

	got := &berthv1alpha1.Organization{}
	require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Name: name}, got))
	assert.Equal(t, berthv1alpha1.PreferSpot, got.Spec.SpotPolicy, "spotPolicy default")
	assert.Equal(t, 30*time.Minute, got.Spec.IdleTimeout.Duration, "idleTimeout default")
	assert.Equal(t, "uploads", got.Spec.Blob.UploadsContainer)
	assert.Equal(t, "projects", got.Spec.Blob.ProjectsContainer)
	assert.Equal(t, "2", got.Spec.Classes.Workspace.Max.CPU.String())

	// The status subresource takes live counts.
	got.Status.Workspaces, got.Status.QueuedBuilds = 7, 2
	require.NoError(t, env.Client.Status().Update(t.Context(), got))

	// kubectl prints the columns a platform engineer looks for.
	out, err := exec.CommandContext(t.Context(), env.Tools.Kubectl, "--kubeconfig", env.Kubeconfig(),
		"get", "organizations", name).CombinedOutput()
	require.NoError(t, err, string(out))
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, 2, string(out))
	assert.Equal(t, []string{"NAME", "SPOT", "WORKSPACES", "MAX-WORKSPACES", "BUILDS", "QUEUED", "GPUS", "AGE"}, strings.Fields(lines[0]))
	assert.Equal(t, []string{name, "PreferSpot", "7", "100", "0", "2", "0"}, strings.Fields(lines[1])[:7])

	// The short name works too.
	out, err = exec.CommandContext(t.Context(), env.Tools.Kubectl, "--kubeconfig", env.Kubeconfig(),
		"get", "org", name, "-o", "name").CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Equal(t, "organization.berth.dev/"+name, strings.TrimSpace(string(out)))
}

func TestBadOrganizationIsRejectedReadably(t *testing.T) {
	env := framework.Cluster(t)
	q := func(s string) *resource.Quantity { return ptr.To(resource.MustParse(s)) }
	tests := []struct {
		name string
		spec berthv1alpha1.OrganizationSpec
		want []string // fragments of the API server's message
	}{{
		name: "negative maxWorkspaces",
		spec: berthv1alpha1.OrganizationSpec{MaxWorkspaces: ptr.To[int32](-1)},
		want: []string{"spec.maxWorkspaces", "-1", "greater than or equal to 0"},
	}, {
		name: "negative maxGPUs",
		spec: berthv1alpha1.OrganizationSpec{MaxGPUs: ptr.To[int32](-4)},
		want: []string{"spec.maxGPUs", "-4", "greater than or equal to 0"},
	}, {
		name: "unknown spot policy",
		spec: berthv1alpha1.OrganizationSpec{SpotPolicy: "Sometimes"},
		want: []string{"spec.spotPolicy", "Sometimes", `"SpotOnly", "PreferSpot", "OnDemand"`},
	}, {
		name: "idle timeout too short",
		spec: berthv1alpha1.OrganizationSpec{IdleTimeout: &metav1.Duration{Duration: 10 * time.Second}},
		want: []string{"spec.idleTimeout", "idleTimeout must be 0 (never stop) or at least 1m"},
	}, {
		name: "default above max",
		spec: berthv1alpha1.OrganizationSpec{Classes: berthv1alpha1.ClassPolicies{Build: berthv1alpha1.ClassPolicy{
			Default: &berthv1alpha1.Resources{CPU: q("4")},
			Max:     &berthv1alpha1.Resources{CPU: q("2")},
		}}},
		want: []string{"spec.classes.build", "default.cpu must not be above max.cpu"},
	}, {
		name: "negative memory",
		spec: berthv1alpha1.OrganizationSpec{Classes: berthv1alpha1.ClassPolicies{Workspace: berthv1alpha1.ClassPolicy{
			Max: &berthv1alpha1.Resources{Memory: q("-1Gi")},
		}}},
		want: []string{"spec.classes.workspace.max", "memory must not be negative"},
	}, {
		name: "scratch request above limit",
		spec: berthv1alpha1.OrganizationSpec{BuildScratch: &berthv1alpha1.ScratchPolicy{Request: q("50Gi"), Limit: q("20Gi")}},
		want: []string{"spec.buildScratch", "request must not be above buildScratch.limit"},
	}, {
		name: "blob account URL not a URL",
		spec: berthv1alpha1.OrganizationSpec{Blob: &berthv1alpha1.BlobSettings{AccountURL: "acme"}},
		want: []string{"spec.blob.accountURL", "must be an http(s) URL"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			org := testutil.Org("bad-" + rand.String(6)).Obj()
			org.Spec = tc.spec
			err := env.Client.Create(t.Context(), org)
			require.Error(t, err, "the API server must reject this Organization")
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}
