// Package buildcapacity tests that berth-scheduler never puts more builds on
// a node than its disk holds, with a cluster of its own (it relabels nodes).
package buildcapacity

import (
	"testing"

	"berth.dev/berth/test/framework"
)

func TestMain(m *testing.M) { framework.Main(m) }
