package webhooks_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/blob"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/webhooks"
)

var blobSettings = berthv1alpha1.BlobSettings{
	AccountURL:        "https://acct.blob.core.windows.net",
	CredentialsSecret: &berthv1alpha1.SecretKeyRef{Name: "blob-dev"},
}

func blobTarget(t *testing.T) webhooks.Target {
	tgt := target(t, build, testOrg().Blob(blobSettings).Obj())
	tgt.Config.BlobImage = "example.com/berth-blob:test"
	tgt.Config.BlobManagerURL = "https://berth-webhook.berth-system.svc"
	return tgt
}

func TestMutatePodInjectsBlob(t *testing.T) {
	pod := testutil.Pod("b").Class(build).Project("shop").Command("mvn", "-B", "package").Obj()
	pod.Spec.Containers[0].Args = []string{"-DskipTests"}
	got := mutate(t, pod, blobTarget(t))

	require.Len(t, got.Spec.InitContainers, 2)
	install, fetch := got.Spec.InitContainers[0], got.Spec.InitContainers[1]
	assert.Equal(t, webhooks.BlobInstallContainer, install.Name)
	assert.Equal(t, "example.com/berth-blob:test", install.Image)
	assert.Equal(t, []string{"/berth-blob", "copy-self", "/berth/bin/berth-blob"}, install.Command)
	assert.Equal(t, webhooks.BlobFetchContainer, fetch.Name)
	assert.Equal(t, []string{"/berth-blob", "fetch", "--project=shop", "--manager-url=https://berth-webhook.berth-system.svc",
		"--uploads-container=uploads", "--dest=/workspace/src"}, fetch.Command)

	main := got.Spec.Containers[0]
	assert.Equal(t, []string{"/berth/bin/berth-blob", "run", "--project=shop", "--manager-url=https://berth-webhook.berth-system.svc",
		"--projects-container=projects", "--artifacts-container=artifacts", "--", "mvn", "-B", "package"}, main.Command)
	assert.Equal(t, []string{"-DskipTests"}, main.Args, "args still follow the command")
	assert.Equal(t, "/workspace/src", main.WorkingDir)
	assert.Contains(t, main.VolumeMounts, corev1.VolumeMount{Name: webhooks.BlobVolume, MountPath: webhooks.BlobDir, ReadOnly: true})
	assert.Contains(t, main.VolumeMounts, corev1.VolumeMount{Name: webhooks.ScratchVolume, MountPath: webhooks.ScratchMountPath})
	assert.Contains(t, fetch.VolumeMounts, corev1.VolumeMount{Name: webhooks.ScratchVolume, MountPath: webhooks.ScratchMountPath})
	// No credential: the Pod's own token, for berth-manager only.
	token := corev1.VolumeMount{Name: webhooks.BlobTokenVolume, MountPath: webhooks.BlobTokenDir, ReadOnly: true}
	assert.Contains(t, main.VolumeMounts, token)
	assert.Contains(t, fetch.VolumeMounts, token)
	assert.Equal(t, blob.DefaultTokenFile, webhooks.BlobTokenDir+"/token")
	var vol *corev1.Volume
	for i := range got.Spec.Volumes {
		if got.Spec.Volumes[i].Name == webhooks.BlobTokenVolume {
			vol = &got.Spec.Volumes[i]
		}
	}
	require.NotNil(t, vol)
	require.Len(t, vol.Projected.Sources, 1)
	sat := vol.Projected.Sources[0].ServiceAccountToken
	assert.Equal(t, blob.TokenAudience, sat.Audience)
	assert.Equal(t, "token", sat.Path)
	for _, c := range append(got.Spec.InitContainers, main) {
		for _, e := range c.Env {
			assert.NotEqual(t, webhooks.EnvBlobConnectionString, e.Name, c.Name)
			assert.Nil(t, e.ValueFrom, "%s gets nothing from a Secret", c.Name)
		}
	}

	// Restricted on every injected container, and the class defaults too.
	for _, c := range got.Spec.InitContainers {
		sc := c.SecurityContext
		require.NotNil(t, sc, c.Name)
		assert.True(t, *sc.RunAsNonRoot, c.Name)
		assert.False(t, *sc.AllowPrivilegeEscalation, c.Name)
		assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop, c.Name)
		assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type, c.Name)
		assert.True(t, *sc.ReadOnlyRootFilesystem, c.Name)
		assert.Equal(t, map[corev1.ResourceName]string{cpu: "2", mem: "4Gi"}, quantities(c.Resources.Requests), c.Name)
	}
	assert.Empty(t, webhooks.ValidatePod(&got.ObjectMeta, &got.Spec, withProject(blobTarget(t), "shop"), field.NewPath("spec")))
}

func TestMutatePodPassesTheSecretOnlyWithCredentialsInPods(t *testing.T) {
	pod := testutil.Pod("b").Class(build).Project("shop").Command("mvn", "-B", "package").Obj()
	tgt := blobTarget(t)
	tgt.Config.BlobCredentialsInPods = true
	got := mutate(t, pod, tgt)
	fetch, main := got.Spec.InitContainers[1], got.Spec.Containers[0]
	assert.Equal(t, []string{"/berth/bin/berth-blob", "run", "--project=shop", "--account-url=https://acct.blob.core.windows.net",
		"--projects-container=projects", "--artifacts-container=artifacts", "--", "mvn", "-B", "package"}, main.Command)
	secretEnv := corev1.EnvVar{Name: webhooks.EnvBlobConnectionString, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "blob-dev"}, Key: "connectionString"}}}
	assert.Contains(t, main.Env, secretEnv)
	assert.Contains(t, fetch.Env, secretEnv)
	for _, v := range got.Spec.Volumes {
		assert.NotEqual(t, webhooks.BlobTokenVolume, v.Name)
	}
}

func TestMutatePodReplacesAUserVolumeNamedLikeTheToken(t *testing.T) {
	pod := testutil.Pod("b").Class(build).Project("shop").Command("make").Obj()
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: webhooks.BlobTokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "https://kubernetes.default.svc", Path: "token"}}}}}})
	got := mutate(t, pod, blobTarget(t))
	n := 0
	for _, v := range got.Spec.Volumes {
		if v.Name == webhooks.BlobTokenVolume {
			n++
			assert.Equal(t, blob.TokenAudience, v.Projected.Sources[0].ServiceAccountToken.Audience)
		}
	}
	assert.Equal(t, 1, n)
}

func withProject(t webhooks.Target, p string) webhooks.Target {
	t.Project = p
	return t
}

func TestMutatePodKeepsUserInitContainersAfterBlob(t *testing.T) {
	pod := testutil.Pod("b").Class(build).Project("shop").Command("make").
		InitContainer(corev1.Container{Name: "prepare", Image: testutil.DefaultImage}).Obj()
	pod.Spec.Containers[0].WorkingDir = "/workspace/src/app"
	got := mutate(t, pod, blobTarget(t))
	var names []string
	for _, c := range got.Spec.InitContainers {
		names = append(names, c.Name)
	}
	assert.Equal(t, []string{webhooks.BlobInstallContainer, webhooks.BlobFetchContainer, "prepare"}, names)
	assert.Equal(t, "/workspace/src/app", got.Spec.Containers[0].WorkingDir, "a working dir the user set is kept")
}

func TestMutatePodWithoutBlob(t *testing.T) {
	tests := []struct {
		name string
		pod  *corev1.Pod
		tgt  webhooks.Target
	}{
		{"no project label", testutil.Pod("b").Class(build).Command("make").Obj(), blobTarget(t)},
		{"org without blob settings", testutil.Pod("b").Class(build).Project("shop").Command("make").Obj(), target(t, build, testOrg().Obj())},
		{"workspace", testutil.Pod("w").Class(workspace).Project("shop").Command("make").Obj(), target(t, workspace, testOrg().Blob(blobSettings).Obj())},
		{"no command", testutil.Pod("b").Class(build).Project("shop").Obj(), blobTarget(t)},
		{"project that would leave its prefix", testutil.Pod("b").Class(build).Project("..").Command("make").Obj(), blobTarget(t)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mutate(t, tc.pod, tc.tgt)
			for _, c := range got.Spec.InitContainers {
				assert.NotContains(t, c.Name, "berth-blob")
			}
			assert.Equal(t, tc.pod.Spec.Containers[0].Command, got.Spec.Containers[0].Command)
		})
	}
}

func TestValidatePodDeniesBuildWithoutCommand(t *testing.T) {
	pod := testutil.Pod("b").Class(build).Project("shop").Obj()
	tgt := withProject(blobTarget(t), "shop")
	got := mutate(t, pod, tgt)
	errs := webhooks.ValidatePod(&got.ObjectMeta, &got.Spec, tgt, field.NewPath("spec"))
	require.Len(t, errs, 1)
	assert.Equal(t, "spec.containers[0].command", errs[0].Field)
	assert.Equal(t, field.ErrorTypeRequired, errs[0].Type)
	assert.Contains(t, errs[0].Detail, "entrypoint cannot be known at admission")
	assert.Contains(t, errs[0].Detail, "set command (and args)")

	bad := withProject(blobTarget(t), "..")
	badPod := mutate(t, testutil.Pod("b").Class(build).Command("make").Obj(), bad)
	errs = webhooks.ValidatePod(&badPod.ObjectMeta, &badPod.Spec, bad, field.NewPath("spec"))
	require.Len(t, errs, 1)
	assert.Equal(t, "metadata.labels[berth.dev/project]", errs[0].Field)

	// Without blob settings, a build needs no command.
	assert.Empty(t, webhooks.ValidatePod(&got.ObjectMeta, &got.Spec, withProject(target(t, build, testOrg().Obj()), "shop"), field.NewPath("spec")))
}

// TestBlobDefaultsMatchTheAPI keeps berth-blob's defaults, which cannot
// import the API package, equal to the Organization's.
func TestBlobDefaultsMatchTheAPI(t *testing.T) {
	assert.Equal(t, berthv1alpha1.DefaultUploadsContainer, blob.DefaultUploadsContainer)
	assert.Equal(t, berthv1alpha1.DefaultProjectsContainer, blob.DefaultProjectsContainer)
	assert.Equal(t, berthv1alpha1.DefaultArtifactsContainer, blob.DefaultArtifactsContainer)
	assert.Equal(t, webhooks.ScratchMountPath+"/src", webhooks.SourceDir)
}
