package v1alpha1

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestSpecDefaults(t *testing.T) {
	var empty OrganizationSpec
	assert.Equal(t, 30*time.Minute, empty.IdleTimeoutOrDefault())
	assert.Equal(t, PreferSpot, empty.SpotPolicyOrDefault())
	assert.Equal(t, "10Gi", ptr.To(empty.ScratchRequest()).String())
	assert.Equal(t, "20Gi", ptr.To(empty.ScratchLimit()).String())

	set := OrganizationSpec{
		IdleTimeout:  &metav1.Duration{Duration: time.Hour},
		SpotPolicy:   OnDemand,
		BuildScratch: &ScratchPolicy{Request: ptr.To(resource.MustParse("5Gi")), Limit: ptr.To(resource.MustParse("8Gi"))},
		Classes:      ClassPolicies{Build: ClassPolicy{Max: &Resources{GPUs: ptr.To[int32](0)}}},
	}
	assert.Equal(t, time.Hour, set.IdleTimeoutOrDefault())
	assert.Equal(t, OnDemand, set.SpotPolicyOrDefault())
	assert.Equal(t, "5Gi", ptr.To(set.ScratchRequest()).String())
	assert.Equal(t, "8Gi", ptr.To(set.ScratchLimit()).String())
	assert.Equal(t, ptr.To[int32](0), set.Classes.Policy(ClassBuild).Max.GPUs)
	assert.Nil(t, set.Classes.Policy(ClassInference).Max)

	off := OrganizationSpec{IdleTimeout: &metav1.Duration{}}
	assert.Zero(t, off.IdleTimeoutOrDefault(), "an idleTimeout of 0 turns idle stops off")
}

func TestParseClass(t *testing.T) {
	for _, c := range Classes {
		got, ok := ParseClass(string(c))
		assert.True(t, ok)
		assert.Equal(t, c, got)
	}
	for _, bad := range []string{"", "Workspace", "batch", "build "} {
		_, ok := ParseClass(bad)
		assert.False(t, ok, "%q", bad)
	}
}
