package kubectlberth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/blob"
)

// UsageOptions are kubectl berth usage's.
type UsageOptions struct {
	// Org is the Organization; empty means the namespace's.
	Org string
	// By is the dimension: user, workspace, project, class or pool.
	By string
	// Since and Until bound the range: an RFC 3339 time, or a duration
	// before now (such as 720h). Empty means berth-meter's default, the
	// last 30 days.
	Since, Until string
}

// Usage reads an org's usage from berth-meter.
func (c *Client) Usage(ctx context.Context, o UsageOptions, now time.Time) (*berthv1alpha1.UsageReport, error) {
	org, err := c.orgOr(ctx, o.Org)
	if err != nil {
		return nil, err
	}
	q := url.Values{"org": {org}}
	if o.By != "" {
		q.Set("by", o.By)
	}
	for _, p := range []struct{ name, v string }{{"since", o.Since}, {"until", o.Until}} {
		if p.v == "" {
			continue
		}
		t, err := timeArg(p.v, now)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", p.name, err)
		}
		q.Set(p.name, t.UTC().Format(time.RFC3339))
	}
	var rep berthv1alpha1.UsageReport
	if err := c.meterGet(ctx, "/v1/usage?"+q.Encode(), &rep); err != nil {
		return nil, fmt.Errorf("usage of org %s: %w", org, err)
	}
	return &rep, nil
}

// AuditVerify asks berth-meter to check an org's audit chain.
func (c *Client) AuditVerify(ctx context.Context, org string) (*berthv1alpha1.AuditReport, error) {
	org, err := c.orgOr(ctx, org)
	if err != nil {
		return nil, err
	}
	var rep berthv1alpha1.AuditReport
	if err := c.meterGet(ctx, "/v1/audit/verify?"+url.Values{"org": {org}}.Encode(), &rep); err != nil {
		return nil, fmt.Errorf("audit log of org %s: %w", org, err)
	}
	return &rep, nil
}

// orgOr returns org, or else the Organization of the namespace.
func (c *Client) orgOr(ctx context.Context, org string) (string, error) {
	if org != "" {
		return org, nil
	}
	var ns corev1.Namespace
	if err := c.Berth.Get(ctx, client.ObjectKey{Name: c.Namespace}, &ns); err != nil {
		return "", fmt.Errorf("read namespace %q to find its org: %w; name the org with --org", c.Namespace, err)
	}
	if org = ns.Labels[berthv1alpha1.LabelOrg]; org == "" {
		return "", fmt.Errorf("namespace %q belongs to no Organization (label %s); name the org with --org", c.Namespace, berthv1alpha1.LabelOrg)
	}
	return org, nil
}

// timeArg reads an RFC 3339 time, or a duration before now.
func timeArg(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-11-01T00:00:00Z) nor a duration before now (720h)", s)
	}
	return now.Add(-d), nil
}

// meterGet GETs path from berth-meter into out, and turns an error answer
// into an error that carries berth-meter's message.
func (c *Client) meterGet(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.MeterURL, "/")+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.Meter.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, answerMessage(b))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("berth-meter's answer is not JSON: %w", err)
	}
	return nil
}

// PrintUsage writes kubectl berth usage: one line per value of the
// dimension and a total, in hours and dollars.
func PrintUsage(w io.Writer, format string, rep *berthv1alpha1.UsageReport) error {
	switch format {
	case OutputJSON, OutputYAML:
		return printValue(w, format, rep)
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	header := []string{strings.ToUpper(rep.By), "HOURS", "CPU-CORE-H", "MEMORY-GIB-H", "GPU-H", "COST", "SPOT", "ON-DEMAND"}
	if format == OutputWide {
		header = append(header, "SCRATCH-GIB-H", "VOLUME-GIB-H", "PROMPT-TOKENS", "GENERATION-TOKENS")
	}
	row := func(key string, t berthv1alpha1.UsageTotal) []string {
		c := []string{key, f(t.RunningSeconds / 3600), f(t.CPUCoreSeconds / 3600), f(t.MemoryGiBSeconds / 3600), f(t.GPUSeconds / 3600),
			"$" + f(t.CostDollars), "$" + f(t.SpotCostDollars), "$" + f(t.OnDemandCostDollars)}
		if format == OutputWide {
			c = append(c, f(t.ScratchGiBHours), f(t.VolumeGiBHours), strconv.FormatInt(t.PromptTokens, 10), strconv.FormatInt(t.GenerationTokens, 10))
		}
		return c
	}
	var sum berthv1alpha1.UsageTotal
	var cells [][]string
	for _, t := range rep.Totals {
		key := t.Key
		if key == "" {
			key = "(none)"
		}
		cells = append(cells, row(key, t))
		add(&sum, t)
	}
	cells = append(cells, row("TOTAL", sum))
	fmt.Fprintf(w, "org %s, %s to %s\n", rep.Org, rep.Since.Format(time.RFC3339), rep.Until.Format(time.RFC3339))
	return table(w, header, cells)
}

func add(sum *berthv1alpha1.UsageTotal, t berthv1alpha1.UsageTotal) {
	sum.RunningSeconds += t.RunningSeconds
	sum.CPUCoreSeconds += t.CPUCoreSeconds
	sum.MemoryGiBSeconds += t.MemoryGiBSeconds
	sum.GPUSeconds += t.GPUSeconds
	sum.ScratchGiBHours += t.ScratchGiBHours
	sum.VolumeGiBHours += t.VolumeGiBHours
	sum.PromptTokens += t.PromptTokens
	sum.GenerationTokens += t.GenerationTokens
	sum.CostDollars += t.CostDollars
	sum.SpotCostDollars += t.SpotCostDollars
	sum.OnDemandCostDollars += t.OnDemandCostDollars
}

// PrintAudit writes kubectl berth audit verify.
func PrintAudit(w io.Writer, format string, rep *berthv1alpha1.AuditReport) error {
	switch format {
	case OutputJSON, OutputYAML:
		return printValue(w, format, rep)
	}
	_, err := fmt.Fprintln(w, rep)
	return err
}

// answerMessage is the message of an error answer of berth's APIs: the
// JSON {"error": ...} they send, else the body as it is.
func answerMessage(body []byte) string {
	var ge blob.GrantError
	if json.Unmarshal(body, &ge) == nil && ge.Error != "" {
		return ge.Error
	}
	return strings.TrimSpace(string(body))
}
