#!/usr/bin/env bash
# Builds the pinned local-cluster tools into a per-version cache outside the clone:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (k8s.io/kubernetes, from go.mod)
#   etcd (go.etcd.io/etcd/server/v3, from hack/tools/etcd/go.mod)
#   kwok, kwokctl (sigs.k8s.io/kwok)
#   controller-gen (sigs.k8s.io/controller-tools)
#   azurite (npm), for the blob tests
#   helm (helm.sh/helm/v3), for the chart test
#   golangci-lint (github.com/golangci/golangci-lint/v2), for make lint, built
#   with the local Go
#   metrics-server (sigs.k8s.io/metrics-server), for clusters that serve
#   metrics.k8s.io
#   karpenter-kwok (sigs.k8s.io/karpenter/kwok), Karpenter with its kwok
#   provider, for the autoscaler end-to-end test
#   krew (sigs.k8s.io/krew), for the test that installs kubectl berth with it
#   kind (sigs.k8s.io/kind), for make kind-up only: built on demand, not by
#   the default target
# A tool already in the cache is not rebuilt, so a fresh clone reuses it.
#
# usage: hack/tools.sh            build what is missing
#        hack/tools.sh controller-gen | golangci-lint | karpenter | kind | helm   build just that one
#        hack/tools.sh env        print the directories holding the tools
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/versions.sh

build_k8s() {
  local dir=$K8S_BIN_DIR
  [ -x "$dir/kube-apiserver" ] && [ -x "$dir/kube-controller-manager" ] &&
    [ -x "$dir/kube-scheduler" ] && [ -x "$dir/kubectl" ] && return 0
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local pkg=k8s.io/component-base/version
  local cpkg=k8s.io/client-go/pkg/version
  local ld="-s -w"
  for p in $pkg $cpkg; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "tools: building Kubernetes $K8S_VERSION binaries into $dir (about 6 min cold)"
  local tmp; tmp=$(mktemp -d "$TOOLS_CACHE/.k8s.XXXXXX")
  CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
  mkdir -p "$dir" && mv "$tmp"/* "$dir"/ && rmdir "$tmp"
}

build_etcd() {
  [ -x "$ETCD_BIN_DIR/etcd" ] && return 0
  echo "tools: building etcd $ETCD_VERSION into $ETCD_BIN_DIR"
  local tmp; tmp=$(mktemp -d "$TOOLS_CACHE/.etcd.XXXXXX")
  (cd hack/tools/etcd && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" .)
  mkdir -p "$ETCD_BIN_DIR" && mv "$tmp/etcd" "$ETCD_BIN_DIR/" && rmdir "$tmp"
}

# go_install DIR MODULE@VERSION PKG... installs PKGs with their own module's go.mod.
go_install() {
  local dir=$1 ver=$2; shift 2
  local missing=0
  for p in "$@"; do [ -x "$dir/$(basename "$p")" ] || missing=1; done
  [ $missing = 0 ] && return 0
  echo "tools: installing $* @$ver into $dir"
  mkdir -p "$dir"
  for p in "$@"; do
    GOBIN=$dir CGO_ENABLED=0 GOFLAGS= go install -trimpath -ldflags "-s -w" "$p@$ver"
  done
}

# install_golangci_lint builds golangci-lint with the Go installed here, never a
# downloaded toolchain: it must know the Go version of the code it checks.
install_golangci_lint() {
  GOTOOLCHAIN=local go_install "$GOLANGCI_LINT_DIR" "$GOLANGCI_LINT_VERSION" \
    github.com/golangci/golangci-lint/v2/cmd/golangci-lint
}

# install_karpenter builds Karpenter's kwok provider, named karpenter-kwok,
# with the Go its module asks for.
install_karpenter() {
  [ -x "$KARPENTER_DIR/karpenter-kwok" ] && return 0
  echo "tools: installing sigs.k8s.io/karpenter/kwok @$KARPENTER_VERSION into $KARPENTER_DIR ($KARPENTER_GO)"
  local tmp; tmp=$(mktemp -d "$TOOLS_CACHE/.karpenter.XXXXXX")
  GOBIN=$tmp GOTOOLCHAIN=$KARPENTER_GO CGO_ENABLED=0 GOFLAGS= \
    go install -trimpath -ldflags "-s -w" "sigs.k8s.io/karpenter/kwok@$KARPENTER_VERSION"
  # Its CRDs come from the same module: Karpenter's own, and the kwok
  # provider's node class.
  local src; src=$(go env GOMODCACHE)/sigs.k8s.io/karpenter@$KARPENTER_VERSION/kwok
  mkdir -p "$tmp/crds"
  cp "$src"/charts/crds/*.yaml "$src"/apis/crds/*.yaml "$tmp/crds/"
  chmod 0644 "$tmp"/crds/*.yaml
  mv "$tmp/kwok" "$tmp/karpenter-kwok"
  rm -rf "$KARPENTER_DIR" && mv "$tmp" "$KARPENTER_DIR"
}

install_azurite() {
  [ -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ] && return 0
  command -v npm >/dev/null || { echo "tools: npm not found; install Node.js 20 (apt-get install nodejs npm)" >&2; exit 1; }
  echo "tools: installing azurite $AZURITE_VERSION into $AZURITE_DIR"
  local tmp; tmp=$(mktemp -d "$TOOLS_CACHE/.azurite.XXXXXX")
  npm install --prefix "$tmp" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null
  rm -rf "$AZURITE_DIR" && mv "$tmp" "$AZURITE_DIR"
}

mkdir -p "$TOOLS_CACHE"
case "${1:-all}" in
  all)
    build_k8s
    build_etcd
    go_install "$KWOK_BIN_DIR" "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
    go_install "$CONTROLLER_GEN_DIR" "$CONTROLLER_GEN_VERSION" sigs.k8s.io/controller-tools/cmd/controller-gen
    install_azurite
    go_install "$HELM_DIR" "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
    go_install "$METRICS_SERVER_DIR" "$METRICS_SERVER_VERSION" sigs.k8s.io/metrics-server/cmd/metrics-server
    go_install "$KREW_DIR" "$KREW_VERSION" sigs.k8s.io/krew/cmd/krew
    install_karpenter
    install_golangci_lint
    ;;
  karpenter)
    install_karpenter
    ;;
  helm)
    go_install "$HELM_DIR" "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
    ;;
  kind)
    go_install "$KIND_DIR" "$KIND_VERSION" sigs.k8s.io/kind
    ;;
  controller-gen)
    go_install "$CONTROLLER_GEN_DIR" "$CONTROLLER_GEN_VERSION" sigs.k8s.io/controller-tools/cmd/controller-gen
    ;;
  golangci-lint)
    install_golangci_lint
    ;;
  env)
    echo "K8S_BIN_DIR=$K8S_BIN_DIR"
    echo "ETCD_BIN_DIR=$ETCD_BIN_DIR"
    echo "KWOK_BIN_DIR=$KWOK_BIN_DIR"
    echo "CONTROLLER_GEN_DIR=$CONTROLLER_GEN_DIR"
    echo "AZURITE_DIR=$AZURITE_DIR"
    echo "HELM_DIR=$HELM_DIR"
    echo "GOLANGCI_LINT_DIR=$GOLANGCI_LINT_DIR"
    echo "METRICS_SERVER_DIR=$METRICS_SERVER_DIR"
    echo "KARPENTER_DIR=$KARPENTER_DIR"
    echo "KIND_DIR=$KIND_DIR"
    echo "KREW_DIR=$KREW_DIR"
    ;;
  *) echo "usage: hack/tools.sh [all|controller-gen|golangci-lint|karpenter|kind|helm|env]" >&2; exit 2 ;;
esac
