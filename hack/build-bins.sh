#!/usr/bin/env bash
# Builds the real cluster binaries the tests and the demo run from the Go module proxy into
# a git-ignored cache folder, once:
#   etcd                 v3.7.3   (hack/tools/etcd)
#   kube-apiserver       v1.37.2  (hack/tools/kube)
#   kubectl              v1.37.2  (hack/tools/kube)
#   kube-apiserver-1.32  v1.32.13 (hack/tools/kube-old): the mixed fleet's old cluster
#                                 (internal/testfleet.OldAPIServer)
#
# Each binary has its own stamp (.stamp-NAME): a hash of the Go version, its package, its
# link flags and its tool module's go.mod and go.sum. Only a binary whose stamp differs is
# rebuilt. A binary without a stamp (a cache from before per-binary stamps, or copied from
# another cache) is kept when its own build info (go version -m) shows this Go, its
# package, and only modules at the versions and sums its go.sum pins.
# Cold: about 6 minutes on 2 cores for the first three (kube-apiserver ~4.5 min), about 7
# more for kube-apiserver-1.32 (about 800 CPU-seconds; 22 min measured on a busy machine).
#
# Usage: hack/build-bins.sh            # prints the bin folder on stdout
# Env:   FLEETCACHE_CACHE  cache root (default: <repo>/.cache)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${FLEETCACHE_CACHE:-$repo/.cache}
bin=$cache/bin

# Keep in step with internal/testfleet (CurrentVersion, OldVersion, OldAPIServer).
KUBE_VERSION=v1.37.2
KUBE_MINOR=37
KUBE_OLD_VERSION=v1.32.13
KUBE_OLD_MINOR=32

# Without these, /version reports v0.0.0-master+$Format:%H$.
kube_ldflags() {
  echo "-s -w -X k8s.io/component-base/version.gitVersion=$1 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$2 -X k8s.io/component-base/version.gitTreeState=clean"
}

# name|tool module|package|link flags
targets=(
  "etcd|etcd|go.etcd.io/etcd/server/v3|-s -w"
  "kube-apiserver|kube|k8s.io/kubernetes/cmd/kube-apiserver|$(kube_ldflags $KUBE_VERSION $KUBE_MINOR)"
  "kubectl|kube|k8s.io/kubernetes/cmd/kubectl|$(kube_ldflags $KUBE_VERSION $KUBE_MINOR)"
  "kube-apiserver-1.32|kube-old|k8s.io/kubernetes/cmd/kube-apiserver|$(kube_ldflags $KUBE_OLD_VERSION $KUBE_OLD_MINOR)"
)

go_version=$(go env GOVERSION)

stamp_of() { # module package ldflags
  { echo "$go_version"; echo "$2"; echo "$3"; cat "$repo/hack/tools/$1/go.mod" "$repo/hack/tools/$1/go.sum"; } | sha256sum | cut -c1-16
}

# adoptable FILE MODULE PACKAGE: the binary's build info shows this Go, this package, and
# every module (main, deps, replacements) at a version and sum the tool module's go.sum has.
# (-trimpath builds do not record -ldflags; the link flags only differ with a version,
# which go.sum pins.)
adoptable() {
  local info
  info=$(go version -m "$1" 2>/dev/null) || return 1
  [[ $(head -1 <<<"$info" | awk '{print $2}') == "$go_version" ]] || return 1
  grep -qxF "$(printf '\tpath\t%s' "$3")" <<<"$info" || return 1
  awk -F'\t' '($2 == "mod" || $2 == "dep" || $2 == "=>") && $5 != "" { print $3 " " $4 " " $5 }' <<<"$info" |
    while read -r path version sum; do
      grep -qxF "$path $version $sum" "$repo/hack/tools/$2/go.sum" || exit 1
    done
}

current() { # name module package ldflags
  [[ -x $bin/$1 && -f $bin/.stamp-$1 && $(cat "$bin/.stamp-$1") == "$(stamp_of "$2" "$3" "$4")" ]]
}

all_current=1
for t in "${targets[@]}"; do
  IFS='|' read -r name module pkg ldflags <<<"$t"
  current "$name" "$module" "$pkg" "$ldflags" || all_current=0
done
if ((all_current)); then
  echo "$bin"
  exit 0
fi

log() { echo "build-bins: $*" >&2; }
mkdir -p "$bin"
export CGO_ENABLED=0
start=$SECONDS
for t in "${targets[@]}"; do
  IFS='|' read -r name module pkg ldflags <<<"$t"
  current "$name" "$module" "$pkg" "$ldflags" && continue
  stamp=$(stamp_of "$module" "$pkg" "$ldflags")
  if [[ -x $bin/$name && ! -f $bin/.stamp-$name ]] && adoptable "$bin/$name" "$module" "$pkg"; then
    log "keeping $name: its build info matches hack/tools/$module"
    echo "$stamp" >"$bin/.stamp-$name"
    continue
  fi
  rm -f "$bin/.stamp-$name"
  t0=$SECONDS
  log "building $name (from hack/tools/$module) ..."
  (cd "$repo/hack/tools/$module" && go build -trimpath -ldflags "$ldflags" -o "$bin/$name.new" "$pkg")
  mv "$bin/$name.new" "$bin/$name"
  echo "$stamp" >"$bin/.stamp-$name"
  log "built $name in $((SECONDS - t0))s"
done
rm -f "$bin/.stamp" # the single stamp of earlier versions of this script

log "done in $((SECONDS - start))s: $bin"
echo "$bin"
