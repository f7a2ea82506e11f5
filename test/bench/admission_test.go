package bench

import (
	"context"
	"fmt"
	"sort"
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
	rounds           = 4
)

// BenchmarkAdmissionLatency measures Pod create latency through the API
// server at 200 creates/s, with berth's webhooks (labelled workspace Pods,
// quota charged) and without them (plain Pods the webhooks' selector skips),
// alternating rounds on the same cluster. It reports p50 and p99 of each and
// the p99 berth adds.
func BenchmarkAdmissionLatency(b *testing.B) {
	env := framework.Cluster(b)
	framework.StartManager(b, env, framework.ManagerOptions{Args: []string{"--controllers=orgstatus"}})
	org := testutil.Org("bench").MaxWorkspaces(100000).Obj()
	env.Create(b, org)
	ns := env.Namespace(b, org.Name)
	cfg := *env.Config
	cfg.QPS, cfg.Burst = 2000, 2000
	c, err := client.New(&cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	plain := func(name string) *corev1.Pod {
		// No scheduler runs by that name: the Pods stay Pending and the
		// scheduler adds no load.
		return testutil.Pod(name).Namespace(ns).SchedulerName("bench-none").Obj()
	}
	labelled := func(name string) *corev1.Pod {
		return testutil.Pod(name).Namespace(ns).Class(berthv1alpha1.ClassWorkspace).SchedulerName("bench-none").Obj()
	}
	// Warm both paths: connections, caches, the ledger.
	paced(b, c, "warm-plain", 50, plain)
	paced(b, c, "warm-berth", 50, labelled)

	var without, with []time.Duration
	for r := range b.N * rounds {
		without = append(without, paced(b, c, fmt.Sprintf("plain-%d", r), podsPerRound, plain)...)
		with = append(with, paced(b, c, fmt.Sprintf("berth-%d", r), podsPerRound, labelled)...)
	}
	p50o, p99o := percentile(without, 50), percentile(without, 99)
	p50w, p99w := percentile(with, 50), percentile(with, 99)
	b.ReportMetric(ms(p50o), "p50-ms-stock")
	b.ReportMetric(ms(p99o), "p99-ms-stock")
	b.ReportMetric(ms(p50w), "p50-ms-berth")
	b.ReportMetric(ms(p99w), "p99-ms-berth")
	b.ReportMetric(ms(p99w-p99o), "p99-ms-added")
	b.Logf("admission at %d creates/s, %d creates each: stock p50 %.1f ms p99 %.1f ms; with berth p50 %.1f ms p99 %.1f ms; added p99 %.1f ms (target < 20 ms)",
		createsPerSecond, len(with), ms(p50o), ms(p99o), ms(p50w), ms(p99w), ms(p99w-p99o))
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
