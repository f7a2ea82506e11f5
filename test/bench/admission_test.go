package bench

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

const (
	createsPerSecond = 200
	podsPerRound     = 200
	rounds           = 3
)

// BenchmarkAdmissionLatency measures Pod create latency through the API
// server at 200 creates/s in three ways, alternating rounds on the same
// cluster: plain Pods the webhooks' selector skips (stock), labelled
// workspace Pods of an org without limits (berth: both webhooks, no ledger
// write), and of an org with maxWorkspaces (berth+quota: one batched ledger
// write). It reports p50 and p99 of each and the p99 berth adds.
func BenchmarkAdmissionLatency(b *testing.B) {
	env := framework.Cluster(b)
	mgr := framework.StartManager(b, env, framework.ManagerOptions{Args: []string{"--controllers=orgstatus"}})
	free := testutil.Org("bench-free").Obj()
	capped := testutil.Org("bench-quota").MaxWorkspaces(100000).Obj()
	env.Create(b, free)
	env.Create(b, capped)
	nsPlain := env.Namespace(b, "")
	nsFree := env.Namespace(b, free.Name)
	nsCapped := env.Namespace(b, capped.Name)
	cfg := *env.Config
	cfg.QPS, cfg.Burst = 2000, 2000
	c, err := client.New(&cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	// No scheduler runs by that name: the Pods stay Pending and the
	// scheduler adds no load.
	plain := func(name string) *corev1.Pod {
		return testutil.Pod(name).Namespace(nsPlain).SchedulerName("bench-none").Obj()
	}
	labelled := func(ns string) func(string) *corev1.Pod {
		return func(name string) *corev1.Pod {
			return testutil.Pod(name).Namespace(ns).Class(berthv1alpha1.ClassWorkspace).SchedulerName("bench-none").Obj()
		}
	}
	paths := []struct {
		name string
		pod  func(string) *corev1.Pod
		lat  []time.Duration
	}{{name: "stock", pod: plain}, {name: "berth", pod: labelled(nsFree)}, {name: "berth+quota", pod: labelled(nsCapped)}}
	// Warm every path: connections, caches, the ledger.
	for _, p := range paths {
		paced(b, c, "warm-"+strings.ReplaceAll(p.name, "+", "-"), 50, p.pod)
	}
	for r := range b.N * rounds {
		for i := range paths {
			paths[i].lat = append(paths[i].lat, paced(b, c, fmt.Sprintf("%s-%d", strings.ReplaceAll(paths[i].name, "+", "-"), r), podsPerRound, paths[i].pod)...)
		}
	}
	stockP99 := percentile(paths[0].lat, 99)
	for _, p := range paths {
		p50, p99 := percentile(p.lat, 50), percentile(p.lat, 99)
		b.ReportMetric(ms(p50), "p50-ms-"+p.name)
		b.ReportMetric(ms(p99), "p99-ms-"+p.name)
		line := fmt.Sprintf("%-12s %d creates at %d/s: p50 %6.1f ms  p99 %6.1f ms", p.name, len(p.lat), createsPerSecond, ms(p50), ms(p99))
		if p.name != "stock" {
			b.ReportMetric(ms(p99-stockP99), "p99-ms-added-"+p.name)
			line += fmt.Sprintf("  added p99 %6.1f ms (target < 20 ms)", ms(p99-stockP99))
		}
		b.Log(line)
	}
	for _, phase := range []string{"mutate", "validate"} {
		sum, _ := mgr.MetricValue("berth_webhook_duration_seconds_sum", `kind="Pod"`, `phase="`+phase+`"`)
		n, _ := mgr.MetricValue("berth_webhook_duration_seconds_count", `kind="Pod"`, `phase="`+phase+`"`)
		if n > 0 {
			b.Logf("inside berth-manager, Pod %s: mean %.2f ms over %.0f calls", phase, 1000*sum/n, n)
		}
	}
	retries, _ := mgr.MetricValue("berth_webhook_quota_retries_total")
	b.Logf("quota ledger writes lost to a concurrent write and retried: %.0f", retries)
}

// paced creates n Pods at createsPerSecond, open loop, returns each create's
// latency, then deletes them (untimed) so the next round starts level.
func paced(b *testing.B, c client.Client, prefix string, n int, pod func(string) *corev1.Pod) []time.Duration {
	ctx := b.Context()
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / createsPerSecond)
	defer tick.Stop()
	for i := range n {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := pod(fmt.Sprintf("%s-%04d", prefix, i))
			start := time.Now()
			if err := c.Create(ctx, p); err != nil {
				b.Errorf("create %s: %v", p.Name, err)
			}
			lat[i] = time.Since(start)
		}()
	}
	wg.Wait()
	var del sync.WaitGroup
	for i := range n {
		del.Add(1)
		go func() {
			defer del.Done()
			p := pod(fmt.Sprintf("%s-%04d", prefix, i))
			_ = c.Delete(context.WithoutCancel(ctx), p, client.GracePeriodSeconds(0))
		}()
	}
	del.Wait()
	return lat
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, (len(s)*p+99)/100-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
