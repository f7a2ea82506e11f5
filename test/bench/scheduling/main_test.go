// Package scheduling benchmarks berth-scheduler against the stock
// kube-scheduler on one local cluster of more than 1,000 fake nodes, with
// the same Pods, in one run. Both are started the same way by the test
// framework (the cluster runs no scheduler of its own): the same client
// limits, leader election, verbosity and pprof path.
package scheduling

import (
	"testing"

	"berth.dev/berth/test/framework"
)

func TestMain(m *testing.M) {
	framework.Main(m, framework.WithoutStockScheduler(),
		framework.WithPoolSizes(map[string]int{"spot-ssd": 1000, "on-demand": 100, "gpu": 20}))
}
