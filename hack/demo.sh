#!/usr/bin/env bash
# make demo: a local fleet of 3 real clusters (mixed: see internal/testfleet), seeded, and
# fleetcache serving it in the foreground (Ctrl-C stops fleetcache; the fleet keeps running
# until hack/fleet.sh down).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export FLEETCACHE_BIN=$(hack/build-bins.sh)
listen=${FLEETCACHE_LISTEN:-127.0.0.1:8080}

hack/fleet.sh up
hack/fleet.sh seed
kubeconfig=$(hack/fleet.sh kubeconfig)
dir=$(dirname "$kubeconfig")

# fleetcache reads through each cluster's read-only user, named after the cluster.
{
  echo "listen: $listen"
  echo "kubeconfig: [$kubeconfig]"
  echo "contexts:"
  echo "  include: ['*-reader']"
  echo "  aliases:"
  for ctx in $("$FLEETCACHE_BIN/kubectl" --kubeconfig "$kubeconfig" config get-contexts -o name | grep -- '-reader$'); do
    echo "    $ctx: ${ctx%-reader}"
  done
  echo "resources: [{name: namespaces}, {name: nodes}, {name: pods}, {name: deployments.apps}, {name: replicasets.apps}, {name: services}, {name: configmaps}, {name: secrets}, {name: widgets.example.com}]"
  echo "log: {format: console}"
} > "$dir/fleetcache.yaml"

cat <<MSG

fleetcache is starting on http://$listen with $dir/fleetcache.yaml. In another terminal:
  curl -s "http://$listen/api/v1/clusters?pretty"  # every cluster and resource, phase and counts
  curl -s http://$listen/metrics | grep ^fleetcache_
  hack/fleet.sh stop bravo                     # freeze a cluster; watch bravo turn Unreachable
  hack/fleet.sh cont bravo
  hack/fleet.sh kill-configmaps-etcd bravo     # only bravo's ConfigMaps fail (their own etcd)
  hack/fleet.sh start-configmaps-etcd bravo
The fleet is mixed: charlie runs kube-apiserver v1.32 with watch-list off (informers LIST
then WATCH), bravo keeps its ConfigMaps on a second etcd (hack/fleet.sh status).
Ctrl-C stops fleetcache; hack/fleet.sh down stops the clusters.

MSG
exec bin/fleetcache serve --config "$dir/fleetcache.yaml"
