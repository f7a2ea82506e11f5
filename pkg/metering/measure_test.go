package metering

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A measured use above the requests is charged, and takes a larger share
// of the node; below them, the requests are charged.
func TestIntervalsChargeTheLargerOfRequestAndUse(t *testing.T) {
	p := Pod{UID: "u", CPU: 1, MemoryGiB: 2, Start: t0, End: t0.Add(3 * time.Minute),
		NodeShare: 1.0 / 16, NodePrice: 1.6, AllocCPU: 16, AllocMemoryGiB: 64}
	use := func(start time.Time) Usage {
		switch start {
		case t0:
			return Usage{CPU: 4, MemoryGiB: 1, Measured: true}
		case t0.Add(time.Minute):
			return Usage{CPU: 0.5, MemoryGiB: 0.5, Measured: true}
		}
		return Usage{}
	}
	rows := Intervals(p, t0, t0.Add(time.Hour), time.Minute, use)
	require.Len(t, rows, 3)
	assert.InDelta(t, 4*60, rows[0].CPUCoreSeconds, 1e-9, "use above the request")
	assert.InDelta(t, 2*60, rows[0].MemoryGiBSeconds, 1e-9, "the request above the use")
	assert.InDelta(t, 4.0/16, rows[0].NodeShare, 1e-12)
	assert.InDelta(t, 1.6*4/16*60/3600, rows[0].CostDollars, 1e-12)
	require.NotNil(t, rows[0].CPUUsedCores)
	assert.InDelta(t, 4, *rows[0].CPUUsedCores, 1e-12)

	assert.InDelta(t, 60, rows[1].CPUCoreSeconds, 1e-9, "use below the request")
	assert.InDelta(t, 1.0/16, rows[1].NodeShare, 1e-12)
	assert.Nil(t, rows[2].CPUUsedCores, "no sample, no measurement")
	assert.InDelta(t, 60, rows[2].CPUCoreSeconds, 1e-9)
}

// The meter keeps the largest sample per interval, a bounded number of
// intervals per Pod, and forgets those written.
func TestSamplesKeepTheLargestAndAreBounded(t *testing.T) {
	s := samples{}
	s.add("u", t0, Usage{CPU: 1, MemoryGiB: 3, Measured: true})
	s.add("u", t0, Usage{CPU: 2, MemoryGiB: 1, Measured: true})
	assert.Equal(t, Usage{CPU: 2, MemoryGiB: 3, Measured: true}, s.of("u")(t0))
	assert.False(t, s.of("u")(t0.Add(time.Minute)).Measured)
	assert.False(t, s.of("v")(t0).Measured)

	for i := range maxSamples + 10 {
		s.add("u", t0.Add(time.Duration(i)*time.Minute), Usage{CPU: 1, Measured: true})
	}
	assert.Len(t, s["u"], maxSamples)
	assert.False(t, s.of("u")(t0).Measured, "the oldest go first")

	s.written("u", t0.Add(time.Duration(maxSamples+5)*time.Minute))
	assert.Len(t, s["u"], 5)
}
