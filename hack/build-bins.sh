#!/usr/bin/env bash
# Builds the real cluster binaries the tests and the demo run (etcd, kube-apiserver, kubectl)
# from the Go module proxy into a git-ignored cache folder, once.
#
# The pinned versions live in hack/tools/{etcd,kube}/go.mod. The cache is stamped with a hash
# of those files, the Go version and this script, and rebuilt only when one of them changes.
# A cold build takes about 6 minutes on 2 cores (kube-apiserver alone ~4.5 min).
#
# Usage: hack/build-bins.sh            # prints the bin folder on stdout
# Env:   FLEETCACHE_CACHE  cache root (default: <repo>/.cache)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${FLEETCACHE_CACHE:-$repo/.cache}
bin=$cache/bin

KUBE_VERSION=v1.37.2
KUBE_MINOR=37

stamp=$( { go version; cat "$repo"/hack/tools/etcd/go.{mod,sum} "$repo"/hack/tools/kube/go.{mod,sum} "$0"; } | sha256sum | cut -c1-16)

if [[ -f $bin/.stamp && $(cat "$bin/.stamp") == "$stamp" && -x $bin/etcd && -x $bin/kube-apiserver && -x $bin/kubectl ]]; then
  echo "$bin"
  exit 0
fi

log() { echo "build-bins: $*" >&2; }
mkdir -p "$bin"
rm -f "$bin/.stamp"
export CGO_ENABLED=0

start=$SECONDS
log "building etcd (from hack/tools/etcd) ..."
(cd "$repo/hack/tools/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd.new" go.etcd.io/etcd/server/v3)
mv "$bin/etcd.new" "$bin/etcd"

# Without these, /version reports v0.0.0-master+$Format:%H$.
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$KUBE_MINOR -X k8s.io/component-base/version.gitTreeState=clean"
for cmd in kube-apiserver kubectl; do
  log "building $cmd $KUBE_VERSION (from hack/tools/kube) ..."
  (cd "$repo/hack/tools/kube" && go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd.new" "k8s.io/kubernetes/cmd/$cmd")
  mv "$bin/$cmd.new" "$bin/$cmd"
done

echo "$stamp" > "$bin/.stamp"
log "done in $((SECONDS - start))s: $bin"
echo "$bin"
