package workspaces

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// requestRounds of each kind of write, at once and one at a time; each
// round alternates which kind goes first.
const (
	requestRounds       = 6
	singleRequestRounds = 60
)

// BenchmarkWakeRequest measures the request every wake starts with, a
// write to a Workspace, against the same write to a ConfigMap that holds
// the same template: merge patches of an annotation, 50 at once
// (BenchmarkWakeRequest/50, 6 rounds) and one at a time
// (BenchmarkWakeRequest/1, 60 rounds), in rounds alternating which kind
// goes first. A Workspace is a custom resource: the API server decodes,
// checks and encodes it as unstructured JSON against its schema, where a
// ConfigMap is a built-in type. The difference is a floor under
// BenchmarkWake's ratio that no controller can remove. It reports p50 and
// p95 of each and the median of the rounds' ratios (for one at a time,
// the ratio of the pooled percentiles). It only reports: no target fails
// it.
func BenchmarkWakeRequest(b *testing.B) {
	env, c := setup(b)
	org := testutil.Org("bench-request").Obj()
	env.Create(b, org)
	ns := env.Namespace(b, org.Name)
	names := make([]string, concurrent)
	for i := range names {
		names[i] = fmt.Sprintf("ide-%02d", i)
		ws := stoppedWorkspace(ns, names[i])
		env.Create(b, ws)
		template, err := json.Marshal(ws.Spec.Template)
		if err != nil {
			b.Fatal(err)
		}
		env.Create(b, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: names[i], Namespace: ns},
			Data:       map[string]string{"template": string(template)},
		})
	}
	kinds := map[string]func(name string) client.Object{
		"Workspace": func(name string) client.Object {
			return &berthv1alpha1.Workspace{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
		},
		"ConfigMap": func(name string) client.Object {
			return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
		},
	}
	for _, n := range []int{1, concurrent} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { requestRoundsOf(b, c, names[:n], kinds) })
	}
}

// requestRoundsOf patches names at once, as Workspaces and as ConfigMaps,
// in alternating rounds, and reports.
func requestRoundsOf(b *testing.B, c client.Client, names []string, kinds map[string]func(string) client.Object) {
	rounds, pause := b.N*requestRounds, time.Second
	if len(names) == 1 {
		rounds, pause = b.N*singleRequestRounds, 100*time.Millisecond
	}
	var all = map[string][]time.Duration{}
	var p50s, p95s []float64
	fmt.Println()
	for r := range rounds {
		order := []string{"Workspace", "ConfigMap"}
		if r%2 == 1 {
			order = []string{"ConfigMap", "Workspace"}
		}
		round := map[string][]time.Duration{}
		for _, kind := range order {
			round[kind] = patchAll(b, c, names, kinds[kind], r)
			all[kind] = append(all[kind], round[kind]...)
			// Let the watchers of this round's writes catch up.
			time.Sleep(pause)
		}
		ws, cm := round["Workspace"], round["ConfigMap"]
		if len(names) > 1 {
			logf("round %d: Workspace p50 %s p95 %s, ConfigMap p50 %s p95 %s", r+1,
				ms(framework.Percentile(ws, 50)), ms(framework.Percentile(ws, 95)), ms(framework.Percentile(cm, 50)), ms(framework.Percentile(cm, 95)))
		}
		p50s = append(p50s, ratio(framework.Percentile(ws, 50), framework.Percentile(cm, 50)))
		p95s = append(p95s, ratio(framework.Percentile(ws, 95), framework.Percentile(cm, 95)))
	}
	ws, cm := all["Workspace"], all["ConfigMap"]
	ratio50, ratio95 := framework.Median(p50s), framework.Median(p95s)
	if len(names) == 1 {
		// A round of one patch has one sample: its ratio is the pooled one.
		ratio50 = ratio(framework.Percentile(ws, 50), framework.Percentile(cm, 50))
		ratio95 = ratio(framework.Percentile(ws, 95), framework.Percentile(cm, 95))
	}
	logf("merge patches %d at once, %d rounds: Workspace p50 %s p95 %s; ConfigMap p50 %s p95 %s; Workspace/ConfigMap: p50 %.2fx, p95 %.2fx",
		len(names), rounds, ms(framework.Percentile(ws, 50)), ms(framework.Percentile(ws, 95)),
		ms(framework.Percentile(cm, 50)), ms(framework.Percentile(cm, 95)), ratio50, ratio95)
	b.ReportMetric(framework.Percentile(ws, 95).Seconds(), "workspace-p95-s")
	b.ReportMetric(framework.Percentile(cm, 95).Seconds(), "configmap-p95-s")
	b.ReportMetric(ratio95, "workspace/configmap-p95")
}

// patchAll sets an annotation on every named object at once and returns
// how long each patch took.
func patchAll(b *testing.B, c client.Client, names []string, object func(string) client.Object, round int) []time.Duration {
	b.Helper()
	body := fmt.Appendf(nil, `{"metadata":{"annotations":{"bench.berth.dev/round":"%d"}}}`, round)
	took := make([]time.Duration, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			start := time.Now()
			if err := c.Patch(b.Context(), object(name), client.RawPatch("application/merge-patch+json", body)); err != nil {
				b.Errorf("patch %s: %v", name, err)
			}
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	return took
}
