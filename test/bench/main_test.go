// Package bench holds berth's benchmarks on the local cluster, each run side
// by side against the stock path in one run. `make bench` runs them.
package bench

import (
	"testing"

	"berth.dev/berth/test/framework"
)

func TestMain(m *testing.M) { framework.Main(m, framework.WithAdmissionOnly()) }
