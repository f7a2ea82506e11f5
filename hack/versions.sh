# Pinned versions of the local-cluster tools, sourced by hack/*.sh and read by the
# test framework (through `hack/tools.sh env`). K8S_VERSION must match go.mod.
K8S_VERSION=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
ETCD_VERSION=$(cd "$(dirname "${BASH_SOURCE[0]}")/tools/etcd" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
KWOK_VERSION=v0.8.0
CONTROLLER_GEN_VERSION=v0.21.0
AZURITE_VERSION=3.37.0
HELM_VERSION=v3.22.0
GOLANGCI_LINT_VERSION=v2.15.0
METRICS_SERVER_VERSION=v0.8.0
# Karpenter's kwok provider, for the autoscaler end-to-end test. Its module
# asks for a newer Go than this machine's; the go command fetches that
# toolchain from the module proxy.
KARPENTER_VERSION=v1.14.3
KARPENTER_GO=go1.26.10
# krew, for the test that installs kubectl berth from its krew manifest.
KREW_VERSION=v0.4.3
# kind, for make kind-up on machines with a container engine; not built by
# make tools.
KIND_VERSION=v0.33.0

# The cache lives outside the clone, one folder per tool and version.
TOOLS_CACHE=${BERTH_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/berth/tools}
K8S_BIN_DIR=$TOOLS_CACHE/kubernetes-$K8S_VERSION-$(go env GOVERSION)
ETCD_BIN_DIR=$TOOLS_CACHE/etcd-$ETCD_VERSION
KWOK_BIN_DIR=$TOOLS_CACHE/kwok-$KWOK_VERSION
CONTROLLER_GEN_DIR=$TOOLS_CACHE/controller-gen-$CONTROLLER_GEN_VERSION
AZURITE_DIR=$TOOLS_CACHE/azurite-$AZURITE_VERSION
HELM_DIR=$TOOLS_CACHE/helm-$HELM_VERSION
METRICS_SERVER_DIR=$TOOLS_CACHE/metrics-server-$METRICS_SERVER_VERSION
KARPENTER_DIR=$TOOLS_CACHE/karpenter-$KARPENTER_VERSION
KIND_DIR=$TOOLS_CACHE/kind-$KIND_VERSION
KREW_DIR=$TOOLS_CACHE/krew-$KREW_VERSION
# golangci-lint must be built with a Go at least as new as the code it checks,
# so it is cached per Go version too and rebuilt when Go changes.
GOLANGCI_LINT_DIR=$TOOLS_CACHE/golangci-lint-$GOLANGCI_LINT_VERSION-$(go env GOVERSION)
