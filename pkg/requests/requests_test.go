package requests

import (
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
)

func gpus(n string) corev1.ResourceRequirements {
	q := resource.MustParse(n)
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{"nvidia.com/gpu": q},
		Limits:   corev1.ResourceList{"nvidia.com/gpu": q},
	}
}

func TestGPUs(t *testing.T) {
	always := ptr.To(corev1.ContainerRestartPolicyAlways)
	for _, tc := range []struct {
		name string
		spec corev1.PodSpec
		want int64
	}{
		{"none", corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}}}, 0},
		{"containers add up", corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Resources: gpus("1")}, {Name: "b", Resources: gpus("2")}}}, 3},
		{"a sidecar adds to the containers", corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "side", RestartPolicy: always, Resources: gpus("2")}},
			Containers:     []corev1.Container{{Name: "a", Resources: gpus("1")}},
		}, 3},
		{"a plain init container counts alone", corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Resources: gpus("4")}},
			Containers:     []corev1.Container{{Name: "a", Resources: gpus("1")}},
		}, 4},
		{"a limit alone counts as the request", corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Resources: corev1.ResourceRequirements{
			Limits: corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("1000")},
		}}}}, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, GPUs(&tc.spec))
		})
	}
}

func TestPodLevelResourcesReplaceTheContainersSum(t *testing.T) {
	spec := corev1.PodSpec{
		Resources: &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")}},
		Containers: []corev1.Container{{Name: "a", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")},
		}}},
	}
	got := Of(&spec)[corev1.ResourceCPU]
	assert.Equal(t, "4", got.String())
}

func TestClaims(t *testing.T) {
	assert.False(t, Claims(&corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}}}))
	assert.True(t, Claims(&corev1.PodSpec{ResourceClaims: []corev1.PodResourceClaim{{Name: "gpu"}}}))
	assert.True(t, Claims(&corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Resources: corev1.ResourceRequirements{
		Claims: []corev1.ResourceClaim{{Name: "gpu"}},
	}}}}))
}
