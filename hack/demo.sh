#!/usr/bin/env bash
# make demo: a local fleet of real clusters, seeded, then every context queried.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export FLEETCACHE_BIN=$(hack/build-bins.sh)
hack/fleet.sh up
hack/fleet.sh seed
kubeconfig=$(hack/fleet.sh kubeconfig)
for ctx in $("$FLEETCACHE_BIN/kubectl" --kubeconfig "$kubeconfig" config get-contexts -o name | grep -v -- -reader); do
  echo "--- context $ctx"
  "$FLEETCACHE_BIN/kubectl" --kubeconfig "$kubeconfig" --context "$ctx-reader" get deployments -A
done
