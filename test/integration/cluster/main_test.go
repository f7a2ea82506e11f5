// Package cluster holds the spine's integration tests: berth's API served by a
// real API server, and plain workloads scheduled and run on the fake pools.
package cluster

import (
	"testing"

	"berth.dev/berth/test/framework"
)

func TestMain(m *testing.M) { framework.Main(m) }
