package placement

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	fwk "k8s.io/kube-scheduler/framework"
	schedframework "k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/utils/ptr"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/plugins/config"
)

// nodeBuilder builds test nodes shaped like the local cluster's pools.
type nodeBuilder struct{ n *corev1.Node }

func node(name, cpu, memory, disk string) *nodeBuilder {
	alloc := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse(cpu),
		corev1.ResourceMemory:           resource.MustParse(memory),
		corev1.ResourceEphemeralStorage: resource.MustParse(disk),
		corev1.ResourcePods:             resource.MustParse("110"),
	}
	return &nodeBuilder{&corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}},
		Status:     corev1.NodeStatus{Allocatable: alloc, Capacity: alloc.DeepCopy()},
	}}
}

func (b *nodeBuilder) label(k, v string) *nodeBuilder { b.n.Labels[k] = v; return b }

func (b *nodeBuilder) gpus(n string) *nodeBuilder {
	b.n.Status.Allocatable[gpuName] = resource.MustParse(n)
	return b.label("nvidia.com/gpu.present", "true")
}

func (b *nodeBuilder) obj() *corev1.Node { return b.n.DeepCopy() }

func spotNode(name string) *corev1.Node {
	return node(name, "16", "128Gi", "3576Gi").label("kubernetes.azure.com/scalesetpriority", "spot").
		label("berth.dev/local-ssd", "true").obj()
}

func gpuNode(name string) *corev1.Node {
	return node(name, "96", "880Gi", "3500Gi").gpus("4").obj()
}

func workspace(name, on string) *corev1.Pod {
	return testutil.Pod(name).Class(berthv1alpha1.ClassWorkspace).Resource(corev1.ResourceCPU, "2").
		Resource(corev1.ResourceMemory, "4Gi").NodeName(on).Obj()
}

func build(name, on string) *corev1.Pod {
	return testutil.Pod(name).Class(berthv1alpha1.ClassBuild).Resource(corev1.ResourceCPU, "1").NodeName(on).Obj()
}

func vllm(name, on string) *corev1.Pod {
	return testutil.Pod(name).Class(berthv1alpha1.ClassInference).Resource(gpuName, "1").NodeName(on).Obj()
}

func testDecider(t *testing.T) *Decider {
	t.Helper()
	d, err := NewDecider(&config.PlacementArgs{})
	require.NoError(t, err)
	return d
}

// cluster is a set of nodes with Pods on them, as both the extender's cache
// and the scheduler's snapshot see it.
type cluster struct {
	nodes []*corev1.Node
	pods  []*corev1.Pod
}

func (c cluster) names() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.Name
	}
	return out
}

func (c cluster) nodeInfo(n *corev1.Node) fwk.NodeInfo {
	var pods []*corev1.Pod
	for _, p := range c.pods {
		if p.Spec.NodeName == n.Name {
			pods = append(pods, p)
		}
	}
	ni := schedframework.NewNodeInfo(pods...)
	ni.SetNode(n)
	return ni
}

func testCluster() cluster {
	c := cluster{nodes: []*corev1.Node{
		spotNode("spot-a"), spotNode("spot-b"), spotNode("spot-c"), spotNode("spot-d"),
		node("od-a", "16", "64Gi", "600Gi").label("berth.dev/local-ssd", "true").obj(),
		node("small-disk", "16", "64Gi", "600Gi").label("berth.dev/local-ssd", "true").label("berth.dev/build-capacity", "2").obj(),
		gpuNode("gpu-a"), gpuNode("gpu-b"),
	}}
	for i := range 3 {
		c.pods = append(c.pods, workspace(fmt.Sprintf("ws-a%d", i), "spot-a"))
	}
	for i := range 5 {
		c.pods = append(c.pods, workspace(fmt.Sprintf("ws-b%d", i), "spot-b"))
	}
	// Past the target: the score falls again.
	for i := range 7 {
		c.pods = append(c.pods, workspace(fmt.Sprintf("ws-d%d", i), "spot-d"))
	}
	c.pods = append(c.pods, build("b-0", "small-disk"), build("b-1", "small-disk"), build("b-2", "od-a"),
		vllm("v-0", "gpu-b"), testutil.Pod("plain").Resource(corev1.ResourceCPU, "500m").NodeName("od-a").Obj())
	return c
}

func TestExtenderDecidesLikeThePlugin(t *testing.T) {
	c := testCluster()
	d := testDecider(t)
	plugin := &Plugin{d: d}
	ext := NewExtender(d, NewStaticNodes(c.nodes, c.pods))
	gpuSelector := testutil.Pod("sneaky").Obj()
	gpuSelector.Spec.NodeSelector = map[string]string{"nvidia.com/gpu.present": "true"}
	pending := map[string]*corev1.Pod{
		"workspace":                   workspace("ws", ""),
		"build":                       build("b", ""),
		"inference":                   vllm("v", ""),
		"plain":                       testutil.Pod("plain").Resource(corev1.ResourceCPU, "1").Obj(),
		"plain asking for a GPU node": gpuSelector,
		"daemon": func() *corev1.Pod {
			p := testutil.Pod("ds").Obj()
			p.OwnerReferences = []metav1.OwnerReference{{Kind: "DaemonSet", Name: "ds", Controller: ptr.To(true)}}
			return p
		}(),
	}
	for name, pod := range pending {
		t.Run(name, func(t *testing.T) {
			names := c.names()
			got := ext.Filter(&extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names})
			prio := ext.Prioritize(&extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names})
			require.Len(t, prio, len(c.nodes))
			cs := schedframework.NewCycleState()
			skip := plugin.PreScore(t.Context(), cs, pod, nil)
			for i, n := range c.nodes {
				ni := c.nodeInfo(n)
				st := plugin.Filter(t.Context(), cs, pod, ni)
				assert.Equal(t, st.Message(), got.FailedNodes[n.Name], "filter reason on %s", n.Name)
				assert.Equal(t, st.IsSuccess(), slices.Contains(*got.NodeNames, n.Name), "filter on %s", n.Name)
				want := int64(0)
				if skip.IsSuccess() {
					s, st := plugin.Score(t.Context(), cs, pod, ni)
					require.True(t, st.IsSuccess(), st.Message())
					want = ExtenderScore(s)
				}
				assert.Equal(t, extenderv1.HostPriority{Host: n.Name, Score: want}, prio[i], "score on %s", n.Name)
			}
		})
	}
}

func TestExtenderPacksLikeThePlugin(t *testing.T) {
	// The ranking that matters survives the 0-10 scale: the fuller spot
	// node beats the emptier, the used GPU node beats the empty one.
	c := testCluster()
	ext := NewExtender(testDecider(t), NewStaticNodes(c.nodes, c.pods))
	names := []string{"spot-a", "spot-b", "spot-c", "spot-d"}
	prio := ext.Prioritize(&extenderv1.ExtenderArgs{Pod: workspace("ws", ""), NodeNames: &names})
	assert.Greater(t, prio[1].Score, prio[0].Score, "%v", prio)
	assert.Greater(t, prio[0].Score, prio[2].Score, "%v", prio)
	assert.Greater(t, prio[3].Score, prio[2].Score, "a full node still beats an empty one: %v", prio)
	names = []string{"gpu-a", "gpu-b"}
	prio = ext.Prioritize(&extenderv1.ExtenderArgs{Pod: vllm("v", ""), NodeNames: &names})
	assert.Greater(t, prio[1].Score, prio[0].Score, "%v", prio)
}

func TestExtenderFilterWithNodeObjects(t *testing.T) {
	c := testCluster()
	ext := NewExtender(testDecider(t), NewStaticNodes(c.nodes, c.pods))
	list := &corev1.NodeList{}
	for _, n := range c.nodes {
		list.Items = append(list.Items, *n)
	}
	// A node the cache does not know yet, sent whole, is still decided.
	list.Items = append(list.Items, *spotNode("spot-new"))
	got := ext.Filter(&extenderv1.ExtenderArgs{Pod: build("b", ""), Nodes: list})
	assert.Nil(t, got.NodeNames)
	var kept []string
	for _, n := range got.Nodes.Items {
		kept = append(kept, n.Name)
	}
	assert.Equal(t, []string{"spot-a", "spot-b", "spot-c", "spot-d", "od-a", "spot-new"}, kept)
	assert.Equal(t, extenderv1.FailedNodesMap{
		"small-disk": "node small-disk runs 2 builds, its disk's build capacity (label berth.dev/build-capacity)",
		"gpu-a":      "node gpu-a is a GPU node, kept for inference; this Pod is not berth.dev/class=inference",
		"gpu-b":      "node gpu-b is a GPU node, kept for inference; this Pod is not berth.dev/class=inference",
	}, got.FailedNodes)
}

func TestExtenderUnknownNodeName(t *testing.T) {
	ext := NewExtender(testDecider(t), NewStaticNodes(nil, nil))
	names := []string{"ghost"}
	got := ext.Filter(&extenderv1.ExtenderArgs{Pod: workspace("ws", ""), NodeNames: &names})
	assert.Empty(t, *got.NodeNames)
	assert.Contains(t, got.FailedNodes["ghost"], "not in berth-extender's cache")
	prio := ext.Prioritize(&extenderv1.ExtenderArgs{Pod: workspace("ws", ""), NodeNames: &names})
	assert.Equal(t, extenderv1.HostPriorityList{{Host: "ghost"}}, prio)
}

func TestExtenderScore(t *testing.T) {
	for in, want := range map[int64]int64{-5: 0, 0: 0, 4: 0, 5: 1, 14: 1, 50: 5, 94: 9, 95: 10, 100: 10, 150: 10} {
		assert.Equal(t, want, ExtenderScore(in), "score %d", in)
	}
}

func TestValidateArgs(t *testing.T) {
	pod := workspace("ws", "")
	names := []string{"a", ""}
	tests := []struct {
		name string
		args extenderv1.ExtenderArgs
		want string
	}{
		{"no pod", extenderv1.ExtenderArgs{NodeNames: &[]string{"a"}}, "Pod: required"},
		{"no nodes", extenderv1.ExtenderArgs{Pod: pod}, "NodeNames or Nodes: one is required"},
		{"both", extenderv1.ExtenderArgs{Pod: pod, NodeNames: &[]string{"a"}, Nodes: &corev1.NodeList{}}, "send only one"},
		{"empty name", extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names}, "NodeNames[1]"},
		{"nameless node", extenderv1.ExtenderArgs{Pod: pod, Nodes: &corev1.NodeList{Items: []corev1.Node{{}}}}, "Nodes.items[0].metadata.name"},
		{"ok", extenderv1.ExtenderArgs{Pod: pod, NodeNames: &[]string{"a"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateArgs(&tt.args)
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, tt.want)
		})
	}
}

// server serves the extender over the test cluster.
func server(t *testing.T, o HandlerOptions) (*httptest.Server, cluster) {
	t.Helper()
	c := testCluster()
	srv := httptest.NewServer(NewExtender(testDecider(t), NewStaticNodes(c.nodes, c.pods)).Handler(o))
	t.Cleanup(srv.Close)
	return srv, c
}

func post(t *testing.T, url string, body []byte) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, out
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func TestExtenderHTTP(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewExtenderMetrics(reg)
	srv, c := server(t, HandlerOptions{Metrics: m})
	names := c.names()

	code, body := post(t, srv.URL+"/filter", mustJSON(t, extenderv1.ExtenderArgs{Pod: workspace("ws", ""), NodeNames: &names}))
	require.Equal(t, http.StatusOK, code, string(body))
	var fr extenderv1.ExtenderFilterResult
	require.NoError(t, json.Unmarshal(body, &fr))
	assert.Equal(t, []string{"spot-a", "spot-b", "spot-c", "spot-d", "od-a", "small-disk"}, *fr.NodeNames)
	assert.Contains(t, fr.FailedNodes["gpu-a"], "kept for inference")

	code, body = post(t, srv.URL+"/prioritize", mustJSON(t, extenderv1.ExtenderArgs{Pod: workspace("ws", ""), NodeNames: &names}))
	require.Equal(t, http.StatusOK, code, string(body))
	var pr extenderv1.HostPriorityList
	require.NoError(t, json.Unmarshal(body, &pr))
	require.Len(t, pr, len(names))
	assert.Equal(t, "spot-b", pr[1].Host)

	assert.Equal(t, 1.0, promtestutil.ToFloat64(m.requests.WithLabelValues("filter", "200")))
	assert.Equal(t, 1.0, promtestutil.ToFloat64(m.requests.WithLabelValues("prioritize", "200")))
	assert.Equal(t, 2, promtestutil.CollectAndCount(m.duration))
}

func TestExtenderHTTPRefusesBadInput(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewExtenderMetrics(reg)
	srv, _ := server(t, HandlerOptions{Metrics: m, MaxRequestBytes: 4096})
	tests := []struct {
		name, body string
		code       int
		want       string
	}{
		{"not JSON", `{"Pod":`, http.StatusBadRequest, "body:"},
		{"wrong type", `{"Pod": 3, "NodeNames": ["a"]}`, http.StatusBadRequest, "Pod: want a JSON"},
		{"wrong nested type", `{"Pod": {"metadata": {"name": 7}}, "NodeNames": ["a"]}`, http.StatusBadRequest, "Pod.metadata.name"},
		{"no pod", `{"NodeNames": ["a"]}`, http.StatusBadRequest, "Pod: required"},
		{"no nodes", `{"Pod": {"metadata": {"name": "p"}}}`, http.StatusBadRequest, "NodeNames or Nodes"},
		{"too large", `{"Pod": {"metadata": {"name": "` + strings.Repeat("x", 5000) + `"}}}`, http.StatusRequestEntityTooLarge, "larger than 4096 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := post(t, srv.URL+"/filter", []byte(tt.body))
			assert.Equal(t, tt.code, code)
			var e errorBody
			require.NoError(t, json.Unmarshal(body, &e), string(body))
			assert.Contains(t, e.Error, tt.want)
		})
	}
	assert.Equal(t, 5.0, promtestutil.ToFloat64(m.requests.WithLabelValues("filter", "400")))
	assert.Equal(t, 1.0, promtestutil.ToFloat64(m.requests.WithLabelValues("filter", "413")))

	resp, err := http.Get(srv.URL + "/filter")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

func TestExtenderHTTPNotReady(t *testing.T) {
	var ready atomic.Bool
	srv, c := server(t, HandlerOptions{Ready: ready.Load})
	names := c.names()
	args := mustJSON(t, extenderv1.ExtenderArgs{Pod: workspace("ws", ""), NodeNames: &names})
	code, body := post(t, srv.URL+"/prioritize", args)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, string(body), "not synced")
	resp, err := http.Get(srv.URL + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)

	ready.Store(true)
	code, _ = post(t, srv.URL+"/prioritize", args)
	assert.Equal(t, http.StatusOK, code)
	resp, err = http.Get(srv.URL + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}
