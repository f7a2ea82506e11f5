package chart

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"berth.dev/berth/pkg/localcluster"
	"berth.dev/berth/test/framework"
)

// What a platform team checks before it trusts an add-on: a
// PodDisruptionBudget per replicated component, NetworkPolicies that open
// only the ports the Pods serve, and ServiceMonitors that scrape a port
// their Service has. Each object is checked against the Deployments and
// Services it points at, and the API server accepts it (a server-side dry
// run).
func TestChartHardening(t *testing.T) {
	env := framework.Cluster(t)
	root, err := localcluster.RepoRoot(".")
	require.NoError(t, err)
	chart := filepath.Join(root, "charts", "berth")
	objs := render(t, env, chart, "--set", "meter.enabled=true", "--set", "meter.database.secretName=berth-db",
		"--set", "networkPolicy.enabled=true", "--set", "serviceMonitor.enabled=true",
		"--set-json", `networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]`)

	deployments := map[string]*appsv1.Deployment{}
	var services []*corev1.Service
	var pdbs []*policyv1.PodDisruptionBudget
	var policies []*networkingv1.NetworkPolicy
	var monitors []*unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment":
			d := &appsv1.Deployment{}
			convert(t, o, d)
			deployments[d.Name] = d
		case "Service":
			s := &corev1.Service{}
			convert(t, o, s)
			services = append(services, s)
		case "PodDisruptionBudget":
			p := &policyv1.PodDisruptionBudget{}
			convert(t, o, p)
			pdbs = append(pdbs, p)
		case "NetworkPolicy":
			p := &networkingv1.NetworkPolicy{}
			convert(t, o, p)
			policies = append(policies, p)
		case "ServiceMonitor":
			monitors = append(monitors, o)
		}
	}
	components := []string{"berth-manager", "berth-scheduler", "berth-meter"}
	for _, name := range components {
		require.Contains(t, deployments, name)
	}
	// selects returns the Deployments whose Pods sel matches.
	selects := func(sel labels.Selector) []string {
		var out []string
		for name, d := range deployments {
			if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				out = append(out, name)
			}
		}
		return out
	}
	selector := func(ls map[string]string) labels.Selector { return labels.SelectorFromSet(ls) }

	var covered []string
	for _, p := range pdbs {
		got := selects(selector(p.Spec.Selector.MatchLabels))
		require.Len(t, got, 1, "PodDisruptionBudget %s selects one Deployment", p.Name)
		covered = append(covered, got...)
		assert.Greater(t, *deployments[got[0]].Spec.Replicas, p.Spec.MinAvailable.IntVal, "%s: a drain can still evict one replica", p.Name)
	}
	assert.ElementsMatch(t, components, covered, "each replicated component has a PodDisruptionBudget")

	covered = nil
	for _, p := range policies {
		got := selects(selector(p.Spec.PodSelector.MatchLabels))
		require.Len(t, got, 1, "NetworkPolicy %s selects one Deployment", p.Name)
		covered = append(covered, got...)
		ports := containerPorts(deployments[got[0]])
		for _, rule := range p.Spec.Ingress {
			for _, port := range rule.Ports {
				assert.Contains(t, ports, port.Port.StrVal, "NetworkPolicy %s opens port %q, which %s serves", p.Name, port.Port.StrVal, got[0])
				if port.Port.StrVal == "metrics" || (got[0] == "berth-scheduler" && port.Port.StrVal == "https") {
					assert.NotEmpty(t, rule.From, "%s: metrics only from networkPolicy.metricsFrom", p.Name)
				}
			}
		}
	}
	assert.ElementsMatch(t, components, covered, "each component has a NetworkPolicy")

	covered = nil
	for _, m := range monitors {
		ml, _, _ := unstructured.NestedStringMap(m.Object, "spec", "selector", "matchLabels")
		eps, _, _ := unstructured.NestedSlice(m.Object, "spec", "endpoints")
		require.Len(t, eps, 1)
		port := eps[0].(map[string]any)["port"]
		found := false
		for _, s := range services {
			if selector(ml).Matches(labels.Set(s.Labels)) && slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == port }) {
				found = true
				covered = append(covered, selects(selector(s.Spec.Selector))...)
			}
		}
		assert.True(t, found, "ServiceMonitor %s scrapes port %v of a Service it selects", m.GetName(), port)
	}
	assert.ElementsMatch(t, []string{"berth-manager", "berth-meter"}, covered)

	// The API server takes them as they are.
	c := env.Client
	ns := env.Namespace(t, "")
	for _, o := range objs {
		if o.GetKind() != "NetworkPolicy" && o.GetKind() != "PodDisruptionBudget" {
			continue
		}
		o.SetNamespace(ns)
		require.NoError(t, c.Create(t.Context(), o, client.DryRunAll), "%s %s", o.GetKind(), o.GetName())
	}

	// One replica needs no budget: it would block every drain.
	for _, o := range render(t, env, chart, "--set", "scheduler.replicas=1", "--set", "manager.replicas=1") {
		assert.NotEqual(t, "PodDisruptionBudget", o.GetKind(), "%s", o.GetName())
	}
}

func convert(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into))
}

func containerPorts(d *appsv1.Deployment) []string {
	var out []string
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			out = append(out, p.Name)
		}
	}
	return out
}
