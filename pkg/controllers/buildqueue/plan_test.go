package buildqueue_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/controllers/buildqueue"
	"berth.dev/berth/pkg/testutil"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// at is t0 plus n seconds.
func at(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }

// build starts a build Job of org acme created at created.
func build(name string, created time.Time) *testutil.JobBuilder {
	return testutil.Job(name).Namespace("team").Class(berthv1alpha1.ClassBuild).
		Label(berthv1alpha1.LabelOrg, "acme").Created(created)
}

// queued is a build berth queued at queuedAt.
func queued(name string, queuedAt, created time.Time) *testutil.JobBuilder {
	return build(name, created).Suspend(true).Annotation(berthv1alpha1.AnnotationQueuedAt, queuedAt.Format(time.RFC3339Nano))
}

// running is a build that runs.
func running(name string) *testutil.JobBuilder { return build(name, t0).Suspend(false) }

func jobs(bs ...*testutil.JobBuilder) []batchv1.Job {
	out := make([]batchv1.Job, 0, len(bs))
	for _, b := range bs {
		out = append(out, *b.Obj())
	}
	return out
}

func names(js []*batchv1.Job) []string {
	out := make([]string, 0, len(js))
	for _, j := range js {
		out = append(out, j.Name)
	}
	return out
}

func TestPlan(t *testing.T) {
	unlimited := testutil.Org("acme")
	tests := []struct {
		name        string
		org         *testutil.OrgBuilder
		jobs        []batchv1.Job
		wantRunning int
		wantQueued  []string
		wantRelease []string
	}{
		{
			name:        "no jobs",
			org:         testutil.Org("acme").MaxConcurrentBuilds(2),
			wantQueued:  []string{},
			wantRelease: []string{},
		},
		{
			name: "FIFO by queued-at, whatever the creation time and name",
			org:  testutil.Org("acme").MaxConcurrentBuilds(2),
			jobs: jobs(
				queued("a", at(30), at(1)),
				queued("b", at(10), at(3)),
				queued("c", at(20), at(2)),
			),
			wantQueued:  []string{"b", "c", "a"},
			wantRelease: []string{"b", "c"},
		},
		{
			name: "same queued-at: by creation time",
			org:  unlimited,
			jobs: jobs(
				queued("a", at(10), at(3)),
				queued("b", at(10), at(1)),
				queued("c", at(10), at(2)),
			),
			wantQueued:  []string{"b", "c", "a"},
			wantRelease: []string{"b", "c", "a"},
		},
		{
			name: "same queued-at and creation time: by name",
			org:  testutil.Org("acme").MaxConcurrentBuilds(1),
			jobs: jobs(
				queued("c", at(10), at(1)),
				queued("a", at(10), at(1)),
				queued("b", at(10), at(1)),
			),
			wantQueued:  []string{"a", "b", "c"},
			wantRelease: []string{"a"},
		},
		{
			name: "sub-second queued-at order is kept",
			org:  testutil.Org("acme").MaxConcurrentBuilds(1),
			jobs: jobs(
				queued("late", t0.Add(2*time.Millisecond), at(0)),
				queued("early", t0.Add(time.Millisecond), at(5)),
			),
			wantQueued:  []string{"early", "late"},
			wantRelease: []string{"early"},
		},
		{
			name:        "unlimited when maxConcurrentBuilds is unset",
			org:         unlimited,
			jobs:        jobs(running("r1"), running("r2"), queued("a", at(1), at(1)), queued("b", at(2), at(2))),
			wantRunning: 2,
			wantQueued:  []string{"a", "b"},
			wantRelease: []string{"a", "b"},
		},
		{
			name:        "slots are the max minus the running",
			org:         testutil.Org("acme").MaxConcurrentBuilds(3),
			jobs:        jobs(running("r1"), queued("a", at(1), at(1)), queued("b", at(2), at(2)), queued("c", at(3), at(3)), queued("d", at(4), at(4))),
			wantRunning: 1,
			wantQueued:  []string{"a", "b", "c", "d"},
			wantRelease: []string{"a", "b"},
		},
		{
			name:        "zero slots when running equals the max",
			org:         testutil.Org("acme").MaxConcurrentBuilds(2),
			jobs:        jobs(running("r1"), running("r2"), queued("a", at(1), at(1))),
			wantRunning: 2,
			wantQueued:  []string{"a"},
			wantRelease: []string{},
		},
		{
			name:        "zero slots when running is above the max",
			org:         testutil.Org("acme").MaxConcurrentBuilds(1),
			jobs:        jobs(running("r1"), running("r2"), running("r3"), queued("a", at(1), at(1))),
			wantRunning: 3,
			wantQueued:  []string{"a"},
			wantRelease: []string{},
		},
		{
			name:        "maxConcurrentBuilds 0 releases none",
			org:         testutil.Org("acme").MaxConcurrentBuilds(0),
			jobs:        jobs(queued("a", at(1), at(1))),
			wantQueued:  []string{"a"},
			wantRelease: []string{},
		},
		{
			name: "finished jobs are neither running nor queued",
			org:  testutil.Org("acme").MaxConcurrentBuilds(2),
			jobs: jobs(
				running("done").Condition(batchv1.JobComplete, corev1.ConditionTrue),
				running("failed").Condition(batchv1.JobFailed, corev1.ConditionTrue),
				queued("failed-queued", at(0), at(0)).Condition(batchv1.JobFailed, corev1.ConditionTrue),
				running("r1"),
				queued("a", at(1), at(1)),
			),
			wantRunning: 1,
			wantQueued:  []string{"a"},
			wantRelease: []string{"a"},
		},
		{
			name: "conditions that are not True do not finish a job",
			org:  testutil.Org("acme").MaxConcurrentBuilds(2),
			jobs: jobs(
				running("r1").Condition(batchv1.JobComplete, corev1.ConditionFalse),
				running("r2").Condition(batchv1.JobFailed, corev1.ConditionUnknown).Condition(batchv1.JobSuspended, corev1.ConditionTrue),
				queued("a", at(1), at(1)),
			),
			wantRunning: 2,
			wantQueued:  []string{"a"},
			wantRelease: []string{},
		},
		{
			name: "deleting jobs are ignored",
			org:  testutil.Org("acme").MaxConcurrentBuilds(1),
			jobs: jobs(
				running("r1").Deleting(at(5)),
				queued("gone", at(0), at(0)).Deleting(at(5)),
				queued("a", at(1), at(1)),
			),
			wantQueued:  []string{"a"},
			wantRelease: []string{"a"},
		},
		{
			name: "suspended without queued-at is not queued",
			org:  unlimited,
			jobs: jobs(
				build("user-suspended", at(0)).Suspend(true),
				build("empty-annotation", at(0)).Suspend(true).Annotation(berthv1alpha1.AnnotationQueuedAt, ""),
				queued("a", at(1), at(1)),
			),
			wantQueued:  []string{"a"},
			wantRelease: []string{"a"},
		},
		{
			name: "unset suspend runs",
			org:  testutil.Org("acme").MaxConcurrentBuilds(1),
			jobs: jobs(
				build("r1", at(0)),
				queued("a", at(1), at(1)),
			),
			wantRunning: 1,
			wantQueued:  []string{"a"},
			wantRelease: []string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := buildqueue.Plan(tt.org.Obj(), tt.jobs)
			assert.Equal(t, tt.wantRunning, d.Running, "running")
			assert.Equal(t, tt.wantQueued, names(d.Queued), "queued")
			assert.Equal(t, tt.wantRelease, names(d.Release), "release")
		})
	}
}

func TestPlanTiesBreakOnNamespace(t *testing.T) {
	js := jobs(
		queued("a", at(1), at(1)).Namespace("zeta"),
		queued("a", at(1), at(1)).Namespace("alpha"),
	)
	d := buildqueue.Plan(testutil.Org("acme").MaxConcurrentBuilds(1).Obj(), js)
	if assert.Len(t, d.Release, 1) {
		assert.Equal(t, "alpha", d.Release[0].Namespace)
	}
}

func TestPlanReleasesTheJobsItWasGiven(t *testing.T) {
	// Reconcile patches the Jobs of Release in place, so they must point
	// into the slice Plan was given.
	js := jobs(queued("a", at(1), at(1)))
	d := buildqueue.Plan(testutil.Org("acme").Obj(), js)
	if assert.Len(t, d.Release, 1) {
		assert.Same(t, &js[0], d.Release[0])
	}
}
