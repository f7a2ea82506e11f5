package metering

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestEndOf(t *testing.T) {
	at := func(d time.Duration) metav1.Time { return metav1.NewTime(t0.Add(d)) }
	deleted := at(time.Minute)

	running := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	_, ended := endOf(running)
	assert.False(t, ended, "a running Pod has not ended")

	deleting := running.DeepCopy()
	deleting.DeletionTimestamp, deleting.DeletionGracePeriodSeconds = &deleted, ptr.To[int64](30)
	end, ended := endOf(deleting)
	assert.True(t, ended)
	assert.Equal(t, t0.Add(30*time.Second), end, "a deleted Pod is charged until its delete was requested")

	done := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{
		{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{FinishedAt: at(10 * time.Second)}}},
		{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{FinishedAt: at(20 * time.Second)}}},
	}}}
	done.DeletionTimestamp, done.DeletionGracePeriodSeconds = &deleted, ptr.To[int64](0)
	end, ended = endOf(done)
	assert.True(t, ended)
	assert.Equal(t, t0.Add(20*time.Second), end, "a finished Pod is charged until its last container finished")

	// Deleted while running, then finished by the kubelet after the
	// request: the same end as when the meter saw only the delete.
	killed := done.DeepCopy()
	killed.Status.ContainerStatuses[1].State.Terminated.FinishedAt = at(50 * time.Second)
	killed.DeletionGracePeriodSeconds = ptr.To[int64](30)
	end, ended = endOf(killed)
	assert.True(t, ended)
	assert.Equal(t, t0.Add(30*time.Second), end, "a Pod finished by its delete is charged until the delete was requested")

	failed := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, Conditions: []corev1.PodCondition{
		{Type: corev1.PodReady, LastTransitionTime: at(5 * time.Second)},
	}}}
	end, _ = endOf(failed)
	assert.Equal(t, t0.Add(5*time.Second), end, "no container says when: the last condition change")
}
