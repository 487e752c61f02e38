#!/usr/bin/env bash
# Runs the local fleet of real kube-apiservers on loopback: a mixed fleet (see
# internal/testfleet.Options): one v1.32 cluster with watch-list off, one with its
# ConfigMaps on a second etcd.
#   hack/fleet.sh up | down | status | seed [--pods N] | kubeconfig [--contexts N] | destroy | reap
#   hack/fleet.sh stop|cont|kill|restart|kill-etcd|start-etcd|kill-configmaps-etcd|start-configmaps-etcd CLUSTER
# State, kubeconfig and logs live in $FLEET_DIR (default .cache/fleet).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export FLEETCACHE_BIN=${FLEETCACHE_BIN:-$(hack/build-bins.sh)}
# Flags go before the verb for Go's flag package; let users write them anywhere.
flags=() args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --pods|--clusters|--dir|--bin|--contexts) flags+=("$1" "$2"); shift 2 ;;
    --uniform) flags+=("$1"); shift ;;
    --*=*) flags+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
mkdir -p .cache
go build -o .cache/fleetctl ./hack/fleetctl
exec .cache/fleetctl "${flags[@]}" "${args[@]}"
