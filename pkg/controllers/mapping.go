package controllers

import (
	"context"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// OrgRequest maps an object to a reconcile of the Organization named by its
// berth.dev/org label. Controllers here reconcile one org at a time.
func OrgRequest(_ context.Context, obj client.Object) []reconcile.Request {
	org := obj.GetLabels()[berthv1alpha1.LabelOrg]
	if org == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: org}}}
}

// Labelled passes objects with a berth.dev/class label.
var Labelled = predicate.NewPredicateFuncs(func(obj client.Object) bool {
	_, ok := obj.GetLabels()[berthv1alpha1.LabelClass]
	return ok
})

// JobFinished reports whether a Job has completed or failed.
func JobFinished(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// PodFinished reports whether a Pod has stopped for good.
func PodFinished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}
