#!/usr/bin/env bash
# A kind cluster running berth from its chart, for machines with Docker (or
# Podman, with KIND_EXPERIMENTAL_PROVIDER=podman).
#
# usage: hack/kind.sh up     create the cluster from kind-config.yaml, load
#                            berth's images (make images) and install the
#                            chart; writes bin/kind-$KIND_CLUSTER.kubeconfig
#        hack/kind.sh down   delete the cluster
#
# KIND_CLUSTER names the cluster (default berth). HELM_FLAGS are passed to
# helm install, e.g. HELM_FLAGS="--set manager.placementPreset=gke".
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/versions.sh

name=${KIND_CLUSTER:-berth}
kubeconfig=bin/kind-$name.kubeconfig
images=(berth-blob berth-manager berth-meter berth-scheduler)

engine() {
  if [ "${KIND_EXPERIMENTAL_PROVIDER:-}" = podman ]; then
    command -v podman >/dev/null && return 0
    echo "kind: KIND_EXPERIMENTAL_PROVIDER=podman, but podman is not on PATH" >&2
    return 1
  fi
  if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
    echo "kind: no Docker engine answers here (docker info failed). Start Docker, or set KIND_EXPERIMENTAL_PROVIDER=podman;" >&2
    echo "      without a container engine, make cluster-up runs the local cluster (fake nodes, no engine needed)." >&2
    return 1
  fi
}

up() {
  engine
  bash hack/tools.sh kind
  bash hack/tools.sh helm
  local kind=$KIND_DIR/kind helm=$HELM_DIR/helm
  mkdir -p bin
  if "$kind" get clusters | grep -qx "$name"; then
    echo "kind: cluster $name exists; loading images and upgrading the chart"
    "$kind" get kubeconfig --name "$name" > "$kubeconfig"
  else
    "$kind" create cluster --name "$name" --config kind-config.yaml --kubeconfig "$kubeconfig" --wait 2m
  fi
  # The images are built for this machine's CPU, which kind's nodes share.
  go build -o bin/ ./hack/image
  for image in "${images[@]}"; do
    bin/image --binary "$image" --arch "$(go env GOARCH)" --out "bin/images/$image.tar"
    "$kind" load image-archive --name "$name" "bin/images/$image.tar"
  done
  # The images are loaded, never pulled: kind's nodes have them by the
  # chart's default tag.
  # shellcheck disable=SC2086
  "$helm" upgrade --install berth charts/berth --kubeconfig "$kubeconfig" \
    --namespace berth-system --create-namespace \
    --set image.pullPolicy=Never --wait --timeout 5m ${HELM_FLAGS:-}
  cat <<EOF

berth runs on kind cluster $name.
  export KUBECONFIG=$PWD/$kubeconfig
  kubectl -n berth-system get pods
  E2E_PROVIDER=kind make test-e2e      # the end-to-end tests, against this cluster
  make kind-down                       # delete it
EOF
}

down() {
  bash hack/tools.sh kind
  "$KIND_DIR/kind" delete cluster --name "$name"
  rm -f "$kubeconfig"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: hack/kind.sh up|down" >&2; exit 2 ;;
esac
