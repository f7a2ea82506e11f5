#!/usr/bin/env bash
# Pins berth to one Kubernetes release: k8s.io/kubernetes at vMAJOR.MINOR.PATCH and
# every staging module it replaces (k8s.io/api, client-go, ...) at v0.MINOR.PATCH.
#
# usage: hack/bump-k8s.sh v1.36.3
#
# The staging list is read from k8s.io/kubernetes' own go.mod through the module
# proxy, so a module added or removed upstream is picked up without editing this file.
set -euo pipefail

version=${1:?usage: hack/bump-k8s.sh vMAJOR.MINOR.PATCH (for example v1.36.3)}
if [[ ! $version =~ ^v1\.([0-9]+)\.([0-9]+)$ ]]; then
  echo "bump-k8s: version $version is not of the form v1.MINOR.PATCH; pass for example v1.36.3" >&2
  exit 2
fi
staging="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
cd "$(dirname "$0")/.."

proxy=${GOPROXY:-https://proxy.golang.org}
proxy=${proxy%%,*}
modfile=$(mktemp)
trap 'rm -f "$modfile"' EXIT
curl -fsSL "$proxy/k8s.io/kubernetes/@v/$version.mod" -o "$modfile"

mods=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$modfile" | sort -u)
if [ -z "$mods" ]; then
  echo "bump-k8s: found no staging replacements in k8s.io/kubernetes $version go.mod" >&2
  exit 1
fi

args=("-require=k8s.io/kubernetes@$version")
for m in $mods; do
  args+=("-replace=$m=$m@$staging")
done
go mod edit "${args[@]}"
echo "bump-k8s: k8s.io/kubernetes $version, $(echo "$mods" | wc -l) staging modules at $staging"
go mod tidy
