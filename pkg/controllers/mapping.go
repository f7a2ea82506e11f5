package controllers

import (
	"context"
	"fmt"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// NamespaceOrg returns the Organization namespace ns belongs to, by its
// berth.dev/org label, which only the platform team sets; "" when it has
// none. The org of a Pod or Job is always its namespace's, never a label
// of its own.
func NamespaceOrg(ctx context.Context, r client.Reader, ns string) (string, error) {
	var obj corev1.Namespace
	if err := r.Get(ctx, client.ObjectKey{Name: ns}, &obj); err != nil {
		return "", client.IgnoreNotFound(err)
	}
	return obj.Labels[berthv1alpha1.LabelOrg], nil
}

// OrgNamespaces lists the namespaces that belong to org.
func OrgNamespaces(ctx context.Context, r client.Reader, org string) ([]string, error) {
	var list corev1.NamespaceList
	if err := r.List(ctx, &list, client.MatchingLabels{berthv1alpha1.LabelOrg: org}); err != nil {
		return nil, fmt.Errorf("list namespaces of org %s: %w", org, err)
	}
	names := make([]string, len(list.Items))
	for i := range list.Items {
		names[i] = list.Items[i].Name
	}
	return names, nil
}

// OrgPods lists the labelled Pods in org's namespaces.
func OrgPods(ctx context.Context, r client.Reader, org string) ([]corev1.Pod, error) {
	namespaces, err := OrgNamespaces(ctx, r, org)
	if err != nil {
		return nil, err
	}
	var pods []corev1.Pod
	for _, ns := range namespaces {
		var list corev1.PodList
		if err := r.List(ctx, &list, client.InNamespace(ns), client.HasLabels{berthv1alpha1.LabelClass}); err != nil {
			return nil, fmt.Errorf("list Pods of namespace %s: %w", ns, err)
		}
		pods = append(pods, list.Items...)
	}
	return pods, nil
}

// OrgBuilds lists the build Jobs in org's namespaces.
func OrgBuilds(ctx context.Context, r client.Reader, namespaces []string) ([]batchv1.Job, error) {
	var jobs []batchv1.Job
	for _, ns := range namespaces {
		var list batchv1.JobList
		if err := r.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{berthv1alpha1.LabelClass: string(berthv1alpha1.ClassBuild)}); err != nil {
			return nil, fmt.Errorf("list builds of namespace %s: %w", ns, err)
		}
		jobs = append(jobs, list.Items...)
	}
	return jobs, nil
}

// OrgOfNamespace maps an object to a reconcile of its namespace's
// Organization. Controllers here reconcile one org at a time.
func OrgOfNamespace(r client.Reader) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		org, err := NamespaceOrg(ctx, r, obj.GetNamespace())
		if err != nil || org == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: org}}}
	}
}

// NamespaceToOrg maps a Namespace to a reconcile of the Organization it
// belongs to. On an update the handler maps the old and the new Namespace,
// so a namespace moved between orgs reconciles both.
func NamespaceToOrg(_ context.Context, obj client.Object) []reconcile.Request {
	if org := obj.GetLabels()[berthv1alpha1.LabelOrg]; org != "" {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: org}}}
	}
	return nil
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
