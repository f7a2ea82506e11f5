// Package quota proves that an org's quota holds exactly with several
// independent webhook replicas, each with its own cache, deciding at once.
package quota

import (
	"testing"

	"berth.dev/berth/test/framework"
)

func TestMain(m *testing.M) { framework.Main(m) }
