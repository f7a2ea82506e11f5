package localcluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Tools are the binaries a local cluster runs, from the tool cache.
type Tools struct {
	KubeAPIServer         string
	KubeControllerManager string
	KubeScheduler         string
	Kubectl               string
	Etcd                  string
	Kwok                  string
	Kwokctl               string
	// AzuriteBlob is Azurite's blob service, for tests that ask for it.
	AzuriteBlob string
	// Helm renders the chart, for the chart test.
	Helm string
	// MetricsServer serves metrics.k8s.io, for clusters that ask for it.
	MetricsServer string
	// Karpenter is Karpenter with its kwok provider, for the autoscaler
	// test; KarpenterCRDs is the folder of the CRDs it needs.
	Karpenter     string
	KarpenterCRDs string
	// Krew installs kubectl berth from its manifest, for the krew test.
	Krew string
}

// LocateTools reads the tool cache's layout from hack/tools.sh, the one place
// that pins the tools' versions. root is the repository's root; see RepoRoot.
func LocateTools(ctx context.Context, root string) (Tools, error) {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack", "tools.sh"), "env")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Tools{}, fmt.Errorf("hack/tools.sh env: %w: %s", err, stderr.String())
	}
	dirs := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			dirs[k] = v
		}
	}
	return Tools{
		KubeAPIServer:         filepath.Join(dirs["K8S_BIN_DIR"], "kube-apiserver"),
		KubeControllerManager: filepath.Join(dirs["K8S_BIN_DIR"], "kube-controller-manager"),
		KubeScheduler:         filepath.Join(dirs["K8S_BIN_DIR"], "kube-scheduler"),
		Kubectl:               filepath.Join(dirs["K8S_BIN_DIR"], "kubectl"),
		Etcd:                  filepath.Join(dirs["ETCD_BIN_DIR"], "etcd"),
		Kwok:                  filepath.Join(dirs["KWOK_BIN_DIR"], "kwok"),
		Kwokctl:               filepath.Join(dirs["KWOK_BIN_DIR"], "kwokctl"),
		AzuriteBlob:           filepath.Join(dirs["AZURITE_DIR"], "node_modules", ".bin", "azurite-blob"),
		Helm:                  filepath.Join(dirs["HELM_DIR"], "helm"),
		MetricsServer:         filepath.Join(dirs["METRICS_SERVER_DIR"], "metrics-server"),
		Karpenter:             filepath.Join(dirs["KARPENTER_DIR"], "karpenter-kwok"),
		KarpenterCRDs:         filepath.Join(dirs["KARPENTER_DIR"], "crds"),
		Krew:                  filepath.Join(dirs["KREW_DIR"], "krew"),
	}, nil
}

// Check reports every cluster binary that is missing, with the fix.
func (t Tools) Check() error {
	var missing []string
	for _, p := range []string{t.KubeAPIServer, t.KubeControllerManager, t.KubeScheduler, t.Kubectl, t.Etcd, t.Kwok, t.Kwokctl} {
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("local cluster tools missing: %s; run `make tools` to build them", strings.Join(missing, ", "))
	}
	return nil
}

// RepoRoot returns the root of the berth repository that holds dir: the
// nearest folder above it with berth's go.mod.
func RepoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module berth.dev/berth\n")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("not inside the berth repository: no go.mod of module berth.dev/berth above " + dir)
		}
	}
}
