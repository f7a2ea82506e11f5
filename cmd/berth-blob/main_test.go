package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoKubernetesDependencies keeps berth-blob small: it runs in every
// build Pod, and must not pull in Kubernetes, controller-runtime or the
// blob store's test double.
func TestNoKubernetesDependencies(t *testing.T) {
	out, err := exec.CommandContext(t.Context(), "go", "list", "-deps", "berth.dev/berth/cmd/berth-blob").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "k8s.io") || strings.Contains(dep, "controller-runtime") {
			t.Errorf("berth-blob depends on %s; keep Kubernetes libraries out of it", dep)
		}
		if strings.HasSuffix(dep, "/blobtest") {
			t.Errorf("berth-blob links %s, a test double; import it from tests only", dep)
		}
	}
}
