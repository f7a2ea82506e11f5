package kubectlberth

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

func TestBuildJob(t *testing.T) {
	file := func(body string) string {
		p := filepath.Join(t.TempDir(), "job.yaml")
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		return p
	}
	labels := map[string]string{berthv1alpha1.LabelClass: "build", berthv1alpha1.LabelProject: "shop"}

	t.Run("plain", func(t *testing.T) {
		job, err := BuildOptions{Dir: ".", Project: "shop", Image: "golang:1.26", Command: []string{"make", "test"}}.job("team-a")
		require.NoError(t, err)
		assert.Equal(t, "shop-", job.GenerateName)
		assert.Equal(t, "team-a", job.Namespace)
		assert.Equal(t, labels, job.Labels)
		assert.Equal(t, labels, job.Spec.Template.Labels)
		assert.Equal(t, int32(0), *job.Spec.BackoffLimit)
		assert.Equal(t, corev1.RestartPolicyNever, job.Spec.Template.Spec.RestartPolicy)
		c := job.Spec.Template.Spec.Containers[0]
		assert.Equal(t, "golang:1.26", c.Image)
		assert.Equal(t, []string{"make", "test"}, c.Command)
	})
	t.Run("from a Job file, whose labels berth's win over", func(t *testing.T) {
		p := file(`apiVersion: batch/v1
kind: Job
metadata:
  name: nightly
  labels: {team: a, berth.dev/project: other}
spec:
  template:
    metadata:
      labels: {berth.dev/class: workspace}
    spec:
      restartPolicy: Never
      serviceAccountName: builder
      containers:
      - name: build
        image: golang:1.25
        command: [make]
        args: [all]
`)
		job, err := BuildOptions{Dir: ".", Project: "shop", JobFile: p}.job("team-a")
		require.NoError(t, err)
		assert.Equal(t, "nightly", job.Name)
		assert.Equal(t, "a", job.Labels["team"])
		assert.Equal(t, "shop", job.Labels[berthv1alpha1.LabelProject])
		assert.Equal(t, labels, job.Spec.Template.Labels)
		assert.Equal(t, "builder", job.Spec.Template.Spec.ServiceAccountName)
		c := job.Spec.Template.Spec.Containers[0]
		assert.Equal(t, "golang:1.25", c.Image)
		assert.Equal(t, []string{"make"}, c.Command)
		assert.Equal(t, []string{"all"}, c.Args)

		job, err = BuildOptions{Dir: ".", Project: "shop", JobFile: p, Image: "golang:1.26", Command: []string{"go", "test"}}.job("team-a")
		require.NoError(t, err)
		c = job.Spec.Template.Spec.Containers[0]
		assert.Equal(t, "golang:1.26", c.Image)
		assert.Equal(t, []string{"go", "test"}, c.Command)
		assert.Nil(t, c.Args, "the command after -- replaces the file's command and args")
	})
	for _, tt := range []struct {
		name string
		o    BuildOptions
		want string
	}{
		{"no project", BuildOptions{Image: "x", Command: []string{"make"}}, `--project: project "" is not a valid project id`},
		{"a project that climbs", BuildOptions{Project: "../bank", Image: "x", Command: []string{"make"}}, `project "../bank" is not a valid project id`},
		{"no image", BuildOptions{Project: "shop", Command: []string{"make"}}, "pass --image"},
		{"no command", BuildOptions{Dir: "src", Project: "shop", Image: "x"}, "name it after --, as in kubectl berth build src --project shop -- make"},
		{"a file that is not a Job", BuildOptions{Project: "shop", JobFile: file("kind: Pod\napiVersion: v1\n")}, "holds a Pod"},
		{"a Job file with a typo", BuildOptions{Project: "shop", JobFile: file("kind: Job\nspec:\n  templat: {}\n")}, `unknown field "templat"`},
		{"a Job file with no container", BuildOptions{Project: "shop", JobFile: file("kind: Job\nspec: {}\n")}, "spec.template.spec.containers is empty"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.o.job("team-a")
			assert.ErrorContains(t, err, tt.want)
		})
	}
}
