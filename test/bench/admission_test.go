package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// admissionRate is one create rate the benchmark measures.
type admissionRate struct {
	perSecond int
	// podsPerRound are the creates of each path in each round.
	podsPerRound int
	// berthAdded is the target for berth's added p99 at this rate, if any.
	berthAdded time.Duration
}

// rates are measured one after the other on the same cluster; at 50/s
// fewer creates a round, so a run stays short.
var rates = []admissionRate{
	{perSecond: 200, podsPerRound: 200},
	{perSecond: 50, podsPerRound: 100, berthAdded: 20 * time.Millisecond},
}

const (
	// rounds is a multiple of the paths' count (4): each path runs first,
	// second, third and fourth equally often.
	rounds = 8
	// warmPods are created on each path before the first rate's rounds.
	warmPods = 50
	// The targets for berth's added p99 against the floor's, the no-op
	// webhook's.
	targetRatioBerth = 1.25
	targetRatioQuota = 1.5
)

// admissionPath is one way of creating Pods, and what its creates measured
// at one rate.
type admissionPath struct {
	name   string
	pod    func(string) *corev1.Pod
	rounds [][]time.Duration
	// calls is the API server's view of the webhook calls during this
	// path's rounds, keyed as webhookSeconds keys it.
	calls map[string]float64
}

// BenchmarkAdmissionLatency measures Pod create latency through the API
// server in four ways, in rounds on the same cluster with the order rotated:
//
//   - stock: plain Pods no webhook selects;
//   - noop: Pods only a no-op mutating webhook selects, served in this
//     process by controller-runtime and registered with the settings of
//     berth's Pod mutating webhook: the floor of any webhook-based add-on
//     (see noopWebhook);
//   - berth: labelled workspace Pods of an org without limits (berth's Pod
//     mutating webhook);
//   - berth+quota: labelled workspace Pods of an org with maxWorkspaces
//     (the quota check and the ledger write as well).
//
// It does so at 200 and at 50 creates/s, and reports for each rate and path
// p50, p99, the p99 added over stock, and for berth and berth+quota their
// added p99 against the floor's. The cluster runs no scheduler and no
// controllers but the service account ones (framework.WithAdmissionOnly).
// It only reports: no target fails it.
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
	noop := startNoopWebhook(b, env, c, nsPlain)
	fmt.Println() // the report starts on a line of its own, not after the benchmark's name
	logf("no-op webhook registered: %s", noop.settings())
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
	// newPaths returns the paths with nothing measured; stock first, the
	// floor second (reportRate relies on it).
	newPaths := func() []*admissionPath {
		return []*admissionPath{
			{name: "stock", pod: plain},
			{name: "noop", pod: noopPod(nsPlain)},
			{name: "berth", pod: labelled(nsFree)},
			{name: "berth+quota", pod: labelled(nsCapped)},
		}
	}
	// Warm every path: connections, caches, the ledger.
	for _, p := range newPaths() {
		paced(b, c, "warm-"+slug(p.name), warmPods, rates[0].perSecond, p.pod)
	}
	for _, rt := range rates {
		paths := newPaths()
		for _, p := range paths {
			p.calls = map[string]float64{}
		}
		mgrBefore := managerSnapshot(b, mgr)
		noopSum, noopN := noop.handlerSeconds(b)
		noopCalls := noop.calls.Load()
		for r := range b.N * rounds {
			// Each round starts at the next path, so that none always
			// follows the same neighbour (and the clean-up of its Pods).
			for k := range paths {
				p := paths[(r+k)%len(paths)]
				before := webhookSeconds(b, env)
				lat := paced(b, c, fmt.Sprintf("%s-%d-%d", slug(p.name), rt.perSecond, r), rt.podsPerRound, rt.perSecond, p.pod)
				p.rounds = append(p.rounds, lat)
				for k, v := range webhookSeconds(b, env) {
					p.calls[k] += v - before[k]
				}
			}
		}
		reportRate(b, rt, paths)

		// Where the time goes: the API server's view of each webhook call,
		// then the webhooks' own handlers.
		for _, p := range paths {
			for _, hook := range []string{berthPodMutatingHook, "pods.validate.berth.dev", noopWebhookName} {
				if n := p.calls[hook+" count"]; n > 0 {
					logf("at %d/s, API server's calls of %s on path %s: mean %.2f ms over %.0f; %.1f%% within 5 ms, %.1f%% within 25 ms",
						rt.perSecond, hook, p.name, 1000*p.calls[hook+" sum"]/n, n, 100*p.calls[hook+" le 0.005"]/n, 100*p.calls[hook+" le 0.025"]/n)
				}
			}
		}
		mgrAfter := managerSnapshot(b, mgr)
		for _, h := range managerHistograms {
			sum, n := mgrAfter[h.what][0]-mgrBefore[h.what][0], mgrAfter[h.what][1]-mgrBefore[h.what][1]
			if n <= 0 {
				continue
			}
			if h.perWrite {
				logf("at %d/s, inside berth-manager, %s: mean %.4f over %.0f writes", rt.perSecond, h.what, sum/n, n)
			} else {
				logf("at %d/s, inside berth-manager, %s: mean %.2f ms over %.0f calls", rt.perSecond, h.what, 1000*sum/n, n)
			}
		}
		if r, ok := mgrAfter[quotaRetries]; ok {
			logf("at %d/s, quota ledger writes lost to a concurrent write and retried: %.0f", rt.perSecond, r[0]-mgrBefore[quotaRetries][0])
		}
		// The floor's handler, as controller-runtime times it in this
		// process: decoding the review and encoding the answer.
		sum, n := noop.handlerSeconds(b)
		if n -= noopN; n > 0 {
			logf("at %d/s, inside this process, handler %s: mean %.2f ms over %.0f calls", rt.perSecond, noopPath, 1000*(sum-noopSum)/n, n)
		}
		logf("at %d/s, the no-op webhook answered %d reviews for %d no-op creates",
			rt.perSecond, noop.calls.Load()-noopCalls, len(slices.Concat(paths[1].rounds...)))
	}
}

// reportRate logs the table of one rate and reports its key numbers.
//
// The p99 a path adds is the median over rounds of its p99 less stock's in
// the same round: one slow second on a shared machine moves a pooled p99 of
// a few hundred creates, not the median of rounds.
//
// The ratio to the floor is a ratio of medians: a path's added p99 (the
// median over rounds) over noop's (likewise). A median of per-round ratios
// would divide by the floor of single rounds, a few ms that noise can bring
// near zero or below, so some rounds' ratios would be huge or negative.
func reportRate(b *testing.B, rt admissionRate, paths []*admissionPath) {
	stock, floor := paths[0], paths[1]
	addedP99 := func(p *admissionPath) time.Duration {
		var added []time.Duration
		for r := range p.rounds {
			added = append(added, framework.Percentile(p.rounds[r], 99)-framework.Percentile(stock.rounds[r], 99))
		}
		return framework.Percentile(added, 50)
	}
	floorAdded := addedP99(floor)
	rate := strconv.Itoa(rt.perSecond)
	var sb strings.Builder
	fmt.Fprintf(&sb, "Pod creates at %d/s: %d rounds of %d creates per path, the order rotated each round\n",
		rt.perSecond, len(stock.rounds), rt.podsPerRound)
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "path\tp50 ms\tp99 ms\tadded p99 ms\tratio to noop\ttarget\tp99 per round, ms")
	for _, p := range paths {
		all := slices.Concat(p.rounds...)
		p50, p99 := framework.Percentile(all, 50), framework.Percentile(all, 99)
		var perRound []time.Duration
		for _, lat := range p.rounds {
			perRound = append(perRound, framework.Percentile(lat, 99))
		}
		b.ReportMetric(ms(p99), "p99-ms-"+p.name+"-"+rate)
		added, ratio, target := "-", "-", "-"
		switch p.name {
		case stock.name:
			// Stock's p50 tells how fast the machine was.
			b.ReportMetric(ms(p50), "p50-ms-stock-"+rate)
		case floor.name:
			b.ReportMetric(ms(floorAdded), "p99-ms-added-"+p.name+"-"+rate)
			added, target = fmt.Sprintf("%.1f", ms(floorAdded)), "(the floor)"
		default:
			med := addedP99(p)
			b.ReportMetric(ms(med), "p99-ms-added-"+p.name+"-"+rate)
			added = fmt.Sprintf("%.1f", ms(med))
			want, metric := targetRatioBerth, "ratio-berth-"
			if p.name == "berth+quota" {
				want, metric = targetRatioQuota, "ratio-quota-"
			}
			if floorAdded > 0 {
				r := float64(med) / float64(floorAdded)
				b.ReportMetric(r, metric+rate)
				ratio = fmt.Sprintf("%.2fx", r)
				target = fmt.Sprintf("<= %.2fx: %s", want, metOrMissed(r <= want))
			} else {
				ratio = "n/a"
				target = fmt.Sprintf("<= %.2fx: n/a, the floor added no p99", want)
			}
			if p.name == "berth" && rt.berthAdded > 0 {
				target += fmt.Sprintf("; added < %.0f ms: %s", ms(rt.berthAdded), metOrMissed(med < rt.berthAdded))
			}
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%s\t%s\t%s\t%v\n", p.name, ms(p50), ms(p99), added, ratio, target, roundMs(perRound))
	}
	_ = tw.Flush()
	sb.WriteString("added p99: the path's p99 less stock's in the same round, the median over rounds; " +
		"ratio to noop: the path's added p99 over noop's (a ratio of medians)")
	logf("%s", sb.String())
}

// logf prints lines of the benchmark's report to stdout, indented as
// testing indents a log: testing keeps only the first 10 lines a benchmark
// logs with b.Log, and the report is longer. go test streams a benchmark's
// output.
func logf(format string, args ...any) {
	fmt.Println("    " + strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", "\n    "))
}

func metOrMissed(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

// slug makes a path's name fit in a Pod's name.
func slug(name string) string { return strings.ReplaceAll(name, "+", "-") }

// managerHistograms are berth-manager's timings the benchmark logs per
// rate: berth's decision, then the whole HTTP handler as controller-runtime
// times it (decoding the review, the decision, the JSON patch); what the API
// server sees beyond that is the transport and its own work. Then the quota
// ledger's writes.
var managerHistograms = []struct {
	what, histogram string
	labels          []string
	// perWrite logs the mean per ledger write, not in ms per call.
	perWrite bool
}{
	{what: "Pod mutate", histogram: "berth_webhook_duration_seconds", labels: []string{`kind="Pod"`, `phase="mutate"`}},
	{what: "Pod validate", histogram: "berth_webhook_duration_seconds", labels: []string{`kind="Pod"`, `phase="validate"`}},
	{what: "handler /mutate-pod", histogram: "controller_runtime_webhook_latency_seconds", labels: []string{`webhook="/mutate-pod"`}},
	{what: "handler /validate-pod", histogram: "controller_runtime_webhook_latency_seconds", labels: []string{`webhook="/validate-pod"`}},
	{what: "berth_webhook_quota_write_seconds", histogram: "berth_webhook_quota_write_seconds", perWrite: true},
	{what: "berth_webhook_quota_batch_size", histogram: "berth_webhook_quota_batch_size", perWrite: true},
}

// quotaRetries counts ledger writes lost to a concurrent write; it is
// logged only while berth-manager exports it.
const quotaRetries = "berth_webhook_quota_retries_total"

// managerSnapshot reads managerHistograms' sums and counts, keyed by what,
// and quotaRetries (in [0]) if berth-manager exports it.
func managerSnapshot(b *testing.B, mgr *framework.Process) map[string][2]float64 {
	out := map[string][2]float64{}
	for _, h := range managerHistograms {
		sum, err := mgr.MetricValue(h.histogram+"_sum", h.labels...)
		if err != nil {
			b.Logf("read berth-manager's metrics: %v", err)
			return out
		}
		n, _ := mgr.MetricValue(h.histogram+"_count", h.labels...)
		out[h.what] = [2]float64{sum, n}
	}
	resp, err := http.Get(mgr.Metrics + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, quotaRetries+" ") || strings.HasPrefix(line, quotaRetries+"{") {
			v, _ := mgr.MetricValue(quotaRetries)
			out[quotaRetries] = [2]float64{v}
			break
		}
	}
	return out
}

// webhookSeconds reads the API server's admission webhook duration sums,
// counts and calls within 5 and 25 ms, keyed "NAME sum", "NAME count",
// "NAME le 0.005" and "NAME le 0.025".
func webhookSeconds(b *testing.B, env *framework.ClusterEnv) map[string]float64 {
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(b.Context())
	if err != nil {
		b.Fatalf("read the API server's metrics: %v", err)
	}
	out := map[string]float64{}
	const metric = "apiserver_admission_webhook_admission_duration_seconds_"
	for _, line := range strings.Split(string(raw), "\n") {
		rest, ok := strings.CutPrefix(line, metric)
		if !ok {
			continue
		}
		kind, _, _ := strings.Cut(rest, "{")
		switch kind {
		case "sum", "count":
		case "bucket":
			// Calls within 5 ms and within 25 ms, the histogram's bounds
			// nearest the target.
			_, le, _ := strings.Cut(rest, `le="`)
			le, _, _ = strings.Cut(le, `"`)
			if le != "0.005" && le != "0.025" {
				continue
			}
			kind = "le " + le
		default:
			continue
		}
		_, after, ok := strings.Cut(rest, `name="`)
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(after, `"`)
		var v float64
		if _, err := fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v); err == nil {
			out[name+" "+kind] += v
		}
	}
	return out
}

// paced creates n Pods at perSecond, open loop, returns each create's
// latency, then deletes them (untimed) so the next round starts level.
func paced(b *testing.B, c client.Client, prefix string, n, perSecond int, pod func(string) *corev1.Pod) []time.Duration {
	ctx := b.Context()
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
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

func roundMs(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = math.Round(ms(d)*10) / 10
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
