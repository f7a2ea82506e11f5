// Package metering tests berth's PostgreSQL schema, usage writes and audit
// chain against a real PostgreSQL server, and berth-meter as a process.
package metering

import (
	"testing"

	"berth.dev/berth/test/framework"
)

func TestMain(m *testing.M) { framework.Main(m) }
