// Package extender tests berth-extender, the HTTP scheduler extender, behind
// a stock kube-scheduler: the same labelled Pods must land as berth-scheduler
// places them on the same cluster.
package extender

import (
	"testing"

	"berth.dev/berth/test/framework"
)

func TestMain(m *testing.M) { framework.Main(m) }
