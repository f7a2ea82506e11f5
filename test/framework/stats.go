package framework

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"
)

// Median is the middle value of v, the mean of the two middle ones for an
// even count, 0 for none. Benchmarks report the median of their rounds;
// taking the upper of two middle values would lean every even count of
// rounds upward.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	mid := len(s) / 2
	if len(s)%2 == 0 {
		return (s[mid-1] + s[mid]) / 2
	}
	return s[mid]
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

// EnvReport names the file Report appends to; `make test` sets it and
// prints the file once the tests pass.
const EnvReport = "BERTH_TEST_REPORT"

// Report logs a line of numbers worth reading in a passing run, and appends
// it, with the test's name, to the file $BERTH_TEST_REPORT names, if any.
func Report(t testing.TB, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	path := os.Getenv(EnvReport)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("report: %v", err)
		return
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s: %s\n", t.Name(), line); err != nil {
		t.Errorf("report: %v", err)
	}
}
