package framework

import (
	"slices"
	"time"
)

// Median is the middle value of v (the upper one of an even count), 0 for
// none. Benchmarks report the median of their rounds.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// Percentile is the p-th percentile of d by the nearest-rank method, 0 for
// none.
func Percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, max(0, (len(s)*p+99)/100-1))]
}
