// Package metering tests berth's PostgreSQL schema, usage writes and audit
// chain against a real PostgreSQL server, and berth-meter as a process.
package metering

import (
	"testing"

	"berth.dev/berth/test/framework"
)

// metrics-server serves the use kwok reports, for the meter's measured charges.
func TestMain(m *testing.M) { framework.Main(m, framework.WithMetricsServer()) }
