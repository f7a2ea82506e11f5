package framework

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// WatchNamespace watches the namespace's objects of list's kind from now
// on, and resumes where it was when the API server closes the watch: a busy
// API server may, and a benchmark would then wait for events it never gets.
// The caller stops it.
func WatchNamespace(t testing.TB, c client.WithWatch, ns string, list client.ObjectList) watch.Interface {
	t.Helper()
	if err := c.List(t.Context(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	w, err := watchtools.NewRetryWatcherWithContext(t.Context(), list.GetResourceVersion(), nsWatcher{c, ns, list})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// nsWatcher watches a namespace's objects of list's kind for a
// RetryWatcher.
type nsWatcher struct {
	c    client.WithWatch
	ns   string
	list client.ObjectList
}

func (w nsWatcher) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return w.c.Watch(ctx, w.list.DeepCopyObject().(client.ObjectList), client.InNamespace(w.ns), &client.ListOptions{Raw: &opts})
}
