package metering

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/kubernetes"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/httpauth"
)

// UsagePath is where usage is read.
const UsagePath = "/v1/usage"

// maxRange is the longest span one usage query may cover.
const maxRange = 366 * 24 * time.Hour

// byColumns are the dimensions usage is grouped by, and their columns.
var byColumns = map[string]string{
	"user": "user_name", "workspace": "workspace", "project": "project", "class": "class", "pool": "pool",
}

// UsageQuery asks for one org's usage between Since and Until, summed by
// one dimension. Times are rounded down to the hour.
type UsageQuery struct {
	Org          string
	By           string
	Since, Until time.Time
}

// Total is the usage of one value of the dimension.
type Total = berthv1alpha1.UsageTotal

// Querier is the part of a pgx pool the query uses.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Totals sums an org's usage by q.By, from the hourly sums.
func Totals(ctx context.Context, db Querier, q UsageQuery) ([]Total, error) {
	col, ok := byColumns[q.By]
	if !ok {
		return nil, fmt.Errorf("by %q: use one of %s", q.By, strings.Join(slices.Sorted(maps.Keys(byColumns)), ", "))
	}
	rows, err := db.Query(ctx, fmt.Sprintf(`SELECT %s, sum(running_seconds), sum(cpu_core_seconds), sum(memory_gib_seconds),
		sum(gpu_seconds), sum(scratch_gib_hours), sum(volume_gib_hours), sum(prompt_tokens)::bigint, sum(generation_tokens)::bigint,
		sum(cost_dollars), coalesce(sum(cost_dollars) FILTER (WHERE spot), 0), coalesce(sum(cost_dollars) FILTER (WHERE NOT spot), 0)
		FROM usage_hourly
		WHERE org = $1 AND hour >= date_trunc('hour', $2::timestamptz, 'UTC') AND hour < date_trunc('hour', $3::timestamptz, 'UTC')
		GROUP BY 1 ORDER BY 1`, col), q.Org, q.Since, q.Until)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Total, error) {
		var t Total
		err := r.Scan(&t.Key, &t.RunningSeconds, &t.CPUCoreSeconds, &t.MemoryGiBSeconds, &t.GPUSeconds, &t.ScratchGiBHours,
			&t.VolumeGiBHours, &t.PromptTokens, &t.GenerationTokens, &t.CostDollars, &t.SpotCostDollars, &t.OnDemandCostDollars)
		return t, err
	})
}

// UsageAPI serves GET /v1/usage?org=&by=&since=&until=[&format=csv]. The
// caller must be allowed to get usage.berth.dev named after the org
// (cluster-wide), checked with a SubjectAccessReview.
type UsageAPI struct {
	DB   Querier
	Kube kubernetes.Interface
	Now  func() time.Time
}

// ServeHTTP answers one query, as JSON or CSV.
func (a *UsageAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		httpauth.Fail(w, errors.New("GET "+UsagePath+"?org=ORG&by=user"), http.StatusMethodNotAllowed)
		return
	}
	auth := httpauth.Reviewer{Kube: a.Kube}
	caller, err := auth.Authenticate(r)
	if err != nil {
		httpauth.Fail(w, err, http.StatusUnauthorized)
		return
	}
	q, csvOut, err := a.parse(r)
	if err != nil {
		httpauth.Fail(w, err, http.StatusBadRequest)
		return
	}
	if err := auth.Authorize(r.Context(), caller, authorizationv1.ResourceAttributes{
		Verb: "get", Group: "berth.dev", Resource: "usage", Name: q.Org,
	}); err != nil {
		httpauth.Fail(w, err, http.StatusForbidden)
		return
	}
	totals, err := Totals(r.Context(), a.DB, q)
	if err != nil {
		httpauth.Fail(w, fmt.Errorf("read usage: %w", err), http.StatusServiceUnavailable)
		return
	}
	if csvOut {
		w.Header().Set("Content-Type", "text/csv")
		cw := csv.NewWriter(w)
		_ = cw.Write([]string{q.By, "running_seconds", "cpu_core_seconds", "memory_gib_seconds", "gpu_seconds", "scratch_gib_hours",
			"volume_gib_hours", "prompt_tokens", "generation_tokens", "cost_dollars", "spot_cost_dollars", "on_demand_cost_dollars"})
		f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
		for _, t := range totals {
			_ = cw.Write([]string{t.Key, f(t.RunningSeconds), f(t.CPUCoreSeconds), f(t.MemoryGiBSeconds), f(t.GPUSeconds), f(t.ScratchGiBHours),
				f(t.VolumeGiBHours), strconv.FormatInt(t.PromptTokens, 10), strconv.FormatInt(t.GenerationTokens, 10),
				f(t.CostDollars), f(t.SpotCostDollars), f(t.OnDemandCostDollars)})
		}
		cw.Flush()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(berthv1alpha1.UsageReport{
		Org: q.Org, By: q.By, Since: q.Since.Truncate(time.Hour), Until: q.Until.Truncate(time.Hour), Totals: totals,
	})
}

// parse reads the query's parameters; the default range is the last 30
// days.
func (a *UsageAPI) parse(r *http.Request) (UsageQuery, bool, error) {
	v := r.URL.Query()
	q := UsageQuery{Org: v.Get("org"), By: v.Get("by"), Until: a.Now().UTC()}
	if q.Org == "" {
		return q, false, errors.New(`parameter "org" is empty; name the Organization, such as org=acme`)
	}
	if q.By == "" {
		q.By = "user"
	}
	if _, ok := byColumns[q.By]; !ok {
		return q, false, fmt.Errorf(`parameter "by" is %q; use one of %s`, q.By, strings.Join(slices.Sorted(maps.Keys(byColumns)), ", "))
	}
	for _, p := range []struct {
		name string
		to   *time.Time
	}{{"until", &q.Until}, {"since", &q.Since}} {
		s := v.Get(p.name)
		if s == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return q, false, fmt.Errorf(`parameter %q is %q; use an RFC 3339 time such as 2026-11-01T00:00:00Z`, p.name, s)
		}
		*p.to = t
	}
	if q.Since.IsZero() {
		q.Since = q.Until.Add(-30 * 24 * time.Hour)
	}
	if !q.Since.Before(q.Until) {
		return q, false, fmt.Errorf(`parameter "since" %s is not before "until" %s; give a range forward in time`, q.Since.Format(time.RFC3339), q.Until.Format(time.RFC3339))
	}
	if q.Until.Sub(q.Since) > maxRange {
		return q, false, fmt.Errorf(`the range %s to %s is longer than a year; query a year or less at a time`, q.Since.Format(time.RFC3339), q.Until.Format(time.RFC3339))
	}
	format := v.Get("format")
	if format == "" && strings.Contains(r.Header.Get("Accept"), "text/csv") {
		format = "csv"
	}
	switch format {
	case "", "json":
		return q, false, nil
	case "csv":
		return q, true, nil
	}
	return q, false, fmt.Errorf(`parameter "format" is %q; use json or csv`, format)
}
