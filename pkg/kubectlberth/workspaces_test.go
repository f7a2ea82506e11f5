package kubectlberth

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
)

func TestQueueListsQueuedBuildsInReleaseOrder(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	job := func(name string, age time.Duration, suspended bool, cond batchv1.JobConditionType) *batchv1.Job {
		j := testutil.Job(name).Namespace("team-a").Class(berthv1alpha1.ClassBuild).Project("shop").Suspend(suspended).
			Created(now.Add(-age)).Obj()
		if cond != "" {
			j.Status.Conditions = []batchv1.JobCondition{{Type: cond, Status: corev1.ConditionTrue}}
		}
		return j
	}
	kube := kubefake.NewClientset(
		job("running", 9*time.Minute, false, ""),
		job("second", 2*time.Minute, true, ""),
		job("done", 20*time.Minute, false, batchv1.JobComplete),
		job("first", 5*time.Minute, true, ""),
		job("broke", 30*time.Minute, false, batchv1.JobFailed),
		testutil.Job("not-a-build").Namespace("team-a").Obj(),
	)
	scheme := runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(scheme))
	require.NoError(t, berthv1alpha1.AddToScheme(scheme))
	berth := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{berthv1alpha1.LabelOrg: "acme"}}},
		&berthv1alpha1.Organization{ObjectMeta: metav1.ObjectMeta{Name: "acme"},
			Spec:   berthv1alpha1.OrganizationSpec{MaxConcurrentBuilds: ptr.To[int32](1)},
			Status: berthv1alpha1.OrganizationStatus{RunningBuilds: 1, QueuedBuilds: 3}},
	).Build()
	c := &Client{Kube: kube, Berth: berth, Namespace: "team-a"}

	list, rows, slots, err := c.Queue(t.Context(), now)
	require.NoError(t, err)
	assert.Len(t, list.Items, 5)
	assert.Equal(t, []QueueRow{
		{Build: "first", Project: "shop", State: "queued", Position: 1, Age: "5m"},
		{Build: "second", Project: "shop", State: "queued", Position: 2, Age: "2m"},
		{Build: "broke", Project: "shop", State: "failed", Age: "30m"},
		{Build: "done", Project: "shop", State: "succeeded", Age: "20m"},
		{Build: "running", Project: "shop", State: "running", Age: "9m"},
	}, rows)
	assert.Equal(t, &OrgSlots{Org: "acme", Readable: true, MaxConcurrentBuilds: ptr.To[int32](1), Running: 1, Queued: 3}, slots)

	var out bytes.Buffer
	PrintSlots(&out, slots)
	PrintSlots(&out, &OrgSlots{Org: "acme"})
	PrintSlots(&out, nil)
	assert.Equal(t, "org acme: 1 builds running (at most 1), 3 queued in all its namespaces\n"+
		"org acme: its build slots are not readable with your rights (get organizations.berth.dev acme)\n", out.String())
	out.Reset()
	require.NoError(t, PrintQueue(&out, OutputTable, list, rows))
	assert.Equal(t, `BUILD     PROJECT   STATE       POSITION   AGE
first     shop      queued      1          5m
second    shop      queued      2          2m
broke     shop      failed      -          30m
done      shop      succeeded   -          20m
running   shop      running     -          9m
`, out.String())
	out.Reset()
	require.NoError(t, PrintQueue(&out, OutputJSON, list, rows))
	assert.Contains(t, out.String(), `"kind": "JobList"`)
}

func TestPrintOrgsShowsUseAgainstCaps(t *testing.T) {
	list := &berthv1alpha1.OrganizationList{Items: []berthv1alpha1.Organization{
		{ObjectMeta: metav1.ObjectMeta{Name: "acme"},
			Spec: berthv1alpha1.OrganizationSpec{MaxWorkspaces: ptr.To[int32](50), MaxConcurrentBuilds: ptr.To[int32](4), MaxGPUs: ptr.To[int32](8),
				IdleTimeout: &metav1.Duration{Duration: 30 * time.Minute}},
			Status: berthv1alpha1.OrganizationStatus{Workspaces: 12, RunningBuilds: 4, QueuedBuilds: 3, GPUs: 2}},
		{ObjectMeta: metav1.ObjectMeta{Name: "globex"}, Status: berthv1alpha1.OrganizationStatus{Workspaces: 1}},
	}}
	var out bytes.Buffer
	require.NoError(t, PrintOrgs(&out, OutputWide, list))
	assert.Equal(t, `ORG      WORKSPACES   BUILDS   QUEUED   GPUS   IDLE-TIMEOUT   SPOT
acme     12/50        4/4      3        2/8    30m0s          -
globex   1            0        0        0      -              -
`, out.String())
}
