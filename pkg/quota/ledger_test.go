package quota_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/quota"
	"berth.dev/berth/pkg/testutil"
)

var admitted = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func ws(uid string) quota.Entry {
	return quota.Entry{UID: types.UID(uid), Class: berthv1alpha1.ClassWorkspace, Admitted: admitted}
}

func gpus(uid string, class berthv1alpha1.Class, n int64) quota.Entry {
	return quota.Entry{UID: types.UID(uid), Class: class, GPUs: n, Admitted: admitted}
}

// entries keys entries as Pods named after their UIDs in namespace "team".
func entries(es ...quota.Entry) map[string]quota.Entry {
	m := make(map[string]quota.Entry, len(es))
	for _, e := range es {
		m[quota.Key("team", string(e.UID))] = e
	}
	return m
}

func TestKey(t *testing.T) {
	tests := []struct {
		namespace, name string
		want            string
	}{
		{namespace: "team", name: "ws-1", want: "team_ws-1"},
		{namespace: "a-b", name: "c.d-e", want: "a-b_c.d-e"},
		{namespace: "n", name: "", want: "n_"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			key := quota.Key(tt.namespace, tt.name)
			assert.Equal(t, tt.want, key)
			ns, name := quota.SplitKey(key)
			assert.Equal(t, tt.namespace, ns)
			assert.Equal(t, tt.name, name)
		})
	}
}

func TestSplitKeyWithoutSeparator(t *testing.T) {
	ns, name := quota.SplitKey("legacy")
	assert.Equal(t, "legacy", ns)
	assert.Empty(t, name)
}

func TestUsageOf(t *testing.T) {
	tests := []struct {
		name    string
		entries map[string]quota.Entry
		want    quota.Usage
	}{
		{name: "nil", entries: nil, want: quota.Usage{}},
		{name: "empty", entries: entries(), want: quota.Usage{}},
		{name: "workspaces counted", entries: entries(ws("a"), ws("b")), want: quota.Usage{Workspaces: 2}},
		{
			name:    "GPUs summed across classes",
			entries: entries(ws("a"), gpus("b", berthv1alpha1.ClassWorkspace, 1), gpus("c", berthv1alpha1.ClassInference, 2), gpus("d", berthv1alpha1.ClassBuild, 4)),
			want:    quota.Usage{Workspaces: 2, GPUs: 7},
		},
		{name: "build without GPUs counts nothing", entries: entries(gpus("b", berthv1alpha1.ClassBuild, 0)), want: quota.Usage{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, quota.UsageOf(tt.entries))
		})
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		org     *berthv1alpha1.Organization
		entries map[string]quota.Entry
		entry   quota.Entry
		want    *quota.ExceededError
	}{
		{
			name:    "no caps",
			org:     testutil.Org("acme").Obj(),
			entries: entries(ws("a"), ws("b"), gpus("c", berthv1alpha1.ClassInference, 100)),
			entry:   gpus("d", berthv1alpha1.ClassWorkspace, 8),
		},
		{
			name:    "workspace under the cap",
			org:     testutil.Org("acme").MaxWorkspaces(3).Obj(),
			entries: entries(ws("a"), ws("b")),
			entry:   ws("c"),
		},
		{
			name:    "workspace at the cap",
			org:     testutil.Org("acme").MaxWorkspaces(3).Obj(),
			entries: entries(ws("a"), ws("b"), ws("c")),
			entry:   ws("d"),
			want:    &quota.ExceededError{Field: "maxWorkspaces", Org: "acme", Limit: 3, Used: 3, Request: 1},
		},
		{
			name:  "maxWorkspaces 0 admits none",
			org:   testutil.Org("acme").MaxWorkspaces(0).Obj(),
			entry: ws("a"),
			want:  &quota.ExceededError{Field: "maxWorkspaces", Org: "acme", Limit: 0, Used: 0, Request: 1},
		},
		{
			name:    "other classes ignore the workspace cap",
			org:     testutil.Org("acme").MaxWorkspaces(1).Obj(),
			entries: entries(ws("a")),
			entry:   gpus("b", berthv1alpha1.ClassBuild, 0),
		},
		{
			name:    "GPUs fit exactly",
			org:     testutil.Org("acme").MaxGPUs(4).Obj(),
			entries: entries(gpus("a", berthv1alpha1.ClassInference, 2)),
			entry:   gpus("b", berthv1alpha1.ClassInference, 2),
		},
		{
			name:    "GPUs over the cap",
			org:     testutil.Org("acme").MaxGPUs(4).Obj(),
			entries: entries(gpus("a", berthv1alpha1.ClassInference, 2), gpus("b", berthv1alpha1.ClassWorkspace, 1)),
			entry:   gpus("c", berthv1alpha1.ClassInference, 2),
			want:    &quota.ExceededError{Field: "maxGPUs", Org: "acme", Limit: 4, Used: 3, Request: 2},
		},
		{
			name:    "no GPUs asked, none checked",
			org:     testutil.Org("acme").MaxGPUs(1).Obj(),
			entries: entries(gpus("a", berthv1alpha1.ClassInference, 5)),
			entry:   gpus("b", berthv1alpha1.ClassInference, 0),
		},
		{
			name:    "GPU workspace within the workspace cap, over the GPU cap",
			org:     testutil.Org("acme").MaxWorkspaces(5).MaxGPUs(2).Obj(),
			entries: entries(ws("a"), gpus("b", berthv1alpha1.ClassInference, 2)),
			entry:   gpus("c", berthv1alpha1.ClassWorkspace, 1),
			want:    &quota.ExceededError{Field: "maxGPUs", Org: "acme", Limit: 2, Used: 2, Request: 1},
		},
		{
			name:    "workspace cap is checked first",
			org:     testutil.Org("acme").MaxWorkspaces(1).MaxGPUs(0).Obj(),
			entries: entries(ws("a")),
			entry:   gpus("b", berthv1alpha1.ClassWorkspace, 1),
			want:    &quota.ExceededError{Field: "maxWorkspaces", Org: "acme", Limit: 1, Used: 1, Request: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := quota.Check(tt.org, tt.entries, tt.entry)
			if tt.want == nil {
				assert.NoError(t, err)
				return
			}
			var exceeded *quota.ExceededError
			require.ErrorAs(t, err, &exceeded)
			assert.Equal(t, tt.want, exceeded)
		})
	}
}

func TestCharged(t *testing.T) {
	tests := []struct {
		class berthv1alpha1.Class
		gpus  int64
		want  bool
	}{
		{class: berthv1alpha1.ClassWorkspace, gpus: 0, want: true},
		{class: berthv1alpha1.ClassWorkspace, gpus: 1, want: true},
		{class: berthv1alpha1.ClassBuild, gpus: 0, want: false},
		{class: berthv1alpha1.ClassBuild, gpus: 1, want: true},
		{class: berthv1alpha1.ClassInference, gpus: 0, want: false},
		{class: berthv1alpha1.ClassInference, gpus: 2, want: true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.class, tt.gpus), func(t *testing.T) {
			assert.Equal(t, tt.want, quota.Charged(tt.class, tt.gpus))
		})
	}
}

func TestExceededErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		err  *quota.ExceededError
		want string
		// contains are the parts every denial must name: org, limit,
		// usage and fix.
		contains []string
	}{
		{
			name:     "maxWorkspaces",
			err:      &quota.ExceededError{Field: "maxWorkspaces", Org: "acme", Limit: 3, Used: 3, Request: 1},
			want:     `Organization "acme" already runs 3 of its 3 workspaces (spec.maxWorkspaces); stop one of them (kubectl delete pod) or ask the platform team to raise spec.maxWorkspaces`,
			contains: []string{`"acme"`, "3 of its 3 workspaces", "stop one of them", "raise spec.maxWorkspaces"},
		},
		{
			name:     "maxGPUs",
			err:      &quota.ExceededError{Field: "maxGPUs", Org: "acme", Limit: 4, Used: 3, Request: 2},
			want:     `Organization "acme" has 3 of its 4 GPUs (spec.maxGPUs) in use and this Pod asks for 2 more; stop an inference or workspace Pod, or ask the platform team to raise spec.maxGPUs`,
			contains: []string{`"acme"`, "3 of its 4 GPUs", "asks for 2 more", "stop an inference or workspace Pod", "raise spec.maxGPUs"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := tt.err.Error()
			assert.Equal(t, tt.want, msg)
			for _, s := range tt.contains {
				assert.Contains(t, msg, s)
			}
		})
	}
}

func TestCheckErrorNamesTheFix(t *testing.T) {
	err := quota.Check(testutil.Org("acme").MaxGPUs(1).Obj(), nil, gpus("a", berthv1alpha1.ClassInference, 2))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "has 0 of its 1 GPUs")
	assert.Contains(t, err.Error(), "raise spec.maxGPUs")
}
