// Package blob benchmarks berth's build data path on Azurite and the local
// cluster, side by side with a plain azblob client: berth-blob moving a
// build's bytes through berth-manager's SAS URLs, and kubectl berth build
// putting a folder up and creating its Job. The cluster is a whole one: a
// build Job needs the Job controller to get its Pod.
package blob

import (
	"testing"

	"berth.dev/berth/test/framework"
)

func TestMain(m *testing.M) { framework.Main(m) }
