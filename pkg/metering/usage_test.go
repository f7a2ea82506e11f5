package metering

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func sum(rows []Row, f func(Row) float64) float64 {
	total := 0.0
	for _, r := range rows {
		total += f(r)
	}
	return total
}

func TestIntervalsSplitARunAtIntervalEdges(t *testing.T) {
	p := Pod{UID: "u", Org: "acme", Class: "workspace", CPU: 2, MemoryGiB: 4, GPU: 1, ScratchGiB: 10,
		Start: t0.Add(30 * time.Second), End: t0.Add(3*time.Minute + 15*time.Second), NodeShare: 0.5, NodePrice: 3.6}
	rows := Intervals(p, t0, t0.Add(time.Hour), time.Minute, nil)

	require.Len(t, rows, 4)
	assert.Equal(t, t0, rows[0].IntervalStart)
	assert.Equal(t, t0.Add(3*time.Minute), rows[3].IntervalStart)
	assert.InDelta(t, 30, rows[0].RunningSeconds, 1e-9)
	assert.InDelta(t, 60, rows[1].RunningSeconds, 1e-9)
	assert.InDelta(t, 15, rows[3].RunningSeconds, 1e-9)
	assert.EqualValues(t, 60, rows[0].IntervalSeconds)

	const ran = 165.0
	assert.InDelta(t, ran, sum(rows, func(r Row) float64 { return r.RunningSeconds }), 1e-9)
	assert.InDelta(t, 2*ran, sum(rows, func(r Row) float64 { return r.CPUCoreSeconds }), 1e-9)
	assert.InDelta(t, 4*ran, sum(rows, func(r Row) float64 { return r.MemoryGiBSeconds }), 1e-9)
	assert.InDelta(t, ran, sum(rows, func(r Row) float64 { return r.GPUSeconds }), 1e-9)
	assert.InDelta(t, 10*ran/3600, sum(rows, func(r Row) float64 { return r.ScratchGiBHours }), 1e-9)
	assert.InDelta(t, 3.6*0.5*ran/3600, sum(rows, func(r Row) float64 { return r.CostDollars }), 1e-9)
}

func TestIntervalsOfARunningPodStopAtTo(t *testing.T) {
	p := Pod{UID: "u", CPU: 1, Start: t0}
	rows := Intervals(p, t0.Add(time.Minute), t0.Add(2*time.Minute+10*time.Second), time.Minute, nil)
	require.Len(t, rows, 2)
	assert.Equal(t, t0.Add(time.Minute), rows[0].IntervalStart)
	assert.InDelta(t, 10, rows[1].RunningSeconds, 1e-9, "the open interval holds what has run so far")

	assert.False(t, rows[1].Final, "a running Pod's rows are not final")
	assert.Empty(t, Intervals(Pod{UID: "u", CPU: 1}, t0, t0.Add(time.Hour), time.Minute, nil), "a Pod that never started used nothing")

	ended := Pod{UID: "u", CPU: 1, Start: t0, End: t0.Add(90 * time.Second)}
	rows = Intervals(ended, t0, t0.Add(80*time.Second), time.Minute, nil)
	require.Len(t, rows, 2)
	assert.True(t, rows[0].Final, "a whole interval before the end is final")
	assert.False(t, rows[1].Final, "the interval holding the end is final only once it is written up to the end")
	rows = Intervals(ended, t0, t0.Add(time.Hour), time.Minute, nil)
	assert.True(t, rows[1].Final)
	assert.Empty(t, Intervals(Pod{UID: "u", Start: t0, End: t0.Add(time.Minute)}, t0.Add(time.Hour), t0.Add(2*time.Hour), time.Minute, nil))
}

func TestIntervalsChargeTheGreaterOfRequestAndUse(t *testing.T) {
	p := Pod{UID: "u", CPU: 1, MemoryGiB: 8, Start: t0, End: t0.Add(2 * time.Minute)}
	use := func(start time.Time) Usage {
		if start.Equal(t0) {
			return Usage{CPU: 3, MemoryGiB: 2}
		}
		return Usage{}
	}
	rows := Intervals(p, t0, t0.Add(time.Hour), time.Minute, use)
	require.Len(t, rows, 2)
	assert.InDelta(t, 180, rows[0].CPUCoreSeconds, 1e-9, "use above the request is charged")
	assert.InDelta(t, 480, rows[0].MemoryGiBSeconds, 1e-9, "the request is charged when use is below it")
	assert.InDelta(t, 60, rows[1].CPUCoreSeconds, 1e-9, "no measurement: the request")
}

func TestNodeShareIsTheLargestPart(t *testing.T) {
	assert.InDelta(t, 0.25, NodeShare(4, 8, 0, 16, 64, 0), 1e-9)
	assert.InDelta(t, 0.5, NodeShare(1, 32, 0, 16, 64, 0), 1e-9)
	assert.InDelta(t, 1, NodeShare(1, 4, 4, 48, 440, 4), 1e-9, "all the GPUs is the whole node")
	assert.InDelta(t, 1, NodeShare(32, 4, 0, 16, 64, 0), 1e-9, "never more than the node")
}

func TestParsePricesReadsThePoolsForm(t *testing.T) {
	p, err := ParsePrices([]byte(`
pools:
- name: spot-ssd
  count: 3
  capacity: {cpu: "16"}
  price: {onDemand: 0.77, spot: 0.15}
- name: gpu
  price: {onDemand: 3.67}
`))
	require.NoError(t, err)
	assert.InDelta(t, 0.15, p.Hourly("spot-ssd", true), 1e-9)
	assert.InDelta(t, 0.77, p.Hourly("spot-ssd", false), 1e-9)
	assert.InDelta(t, 3.67, p.Hourly("gpu", false), 1e-9)
	assert.Zero(t, p.Hourly("unknown", false))

	for in, want := range map[string]string{
		"pools: [{price: {onDemand: 1}}]":              "pools[0].name is empty",
		"pools: [{name: a}, {name: a}]":                `pools[1].name "a" is used twice`,
		"pools: [{name: a, price: {spot: -1}}]":        `pools[0].price of "a" is negative`,
		"pools: [{name: a, price: {onDemand: cheap}}]": "parse prices",
	} {
		_, err := ParsePrices([]byte(in))
		assert.ErrorContains(t, err, want, in)
	}
}

func TestLastPerKeyKeepsTheLastRowOfEachInterval(t *testing.T) {
	rows := lastPerKey([]Row{
		{UID: "a", IntervalStart: t0, RunningSeconds: 10},
		{UID: "b", IntervalStart: t0, RunningSeconds: 5},
		{UID: "a", IntervalStart: t0, RunningSeconds: 60},
		{UID: "a", IntervalStart: t0.Add(time.Minute), RunningSeconds: 1},
	})
	require.Len(t, rows, 3)
	assert.InDelta(t, 60, rows[0].RunningSeconds, 1e-9)
	assert.Equal(t, "b", rows[1].UID)
}
