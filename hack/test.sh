#!/usr/bin/env bash
# The whole test suite (make test): formatting, vet, then every package with the race
# detector and client-go's cache mutation detector, against real clusters the tests start
# under $FLEETCACHE_TEST_ROOT. Fails if any of their processes outlives the run.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

cache=${FLEETCACHE_CACHE:-$repo/.cache}
export FLEETCACHE_BIN=$(hack/build-bins.sh)
export FLEETCACHE_TEST_ROOT=$cache/test
export KUBE_CACHE_MUTATION_DETECTOR=true
export FLEETCACHE_E2E_RACE=1 # the e2e daemons too run under the race detector (e2e/main_test.go)
export PATH=$FLEETCACHE_BIN:$PATH # the tests' kubectl is the one built with the apiserver
mkdir -p "$FLEETCACHE_TEST_ROOT"

leftovers() { pgrep -af -- "$FLEETCACHE_TEST_ROOT" | grep -E '/(etcd|kube-apiserver(-[0-9.]+)?) ' || true; }
trap 'go run ./hack/fleetctl --dir "$FLEETCACHE_TEST_ROOT" reap >/dev/null 2>&1 || true' EXIT

unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '^hack/tools/'))
if [[ -n $unformatted ]]; then
  echo "gofmt needed: $unformatted" >&2
  exit 1
fi
go vet ./...

before=$(leftovers)
if [[ -n $before ]]; then
  echo "processes from an earlier test run are still alive; reaping:" >&2
  echo "$before" >&2
  go run ./hack/fleetctl --dir "$FLEETCACHE_TEST_ROOT" reap
fi

status=0
go test -race -count=1 -timeout 45m "$@" ./... || status=$?

left=$(leftovers)
if [[ -n $left ]]; then
  echo "FAIL: test processes outlived the test run:" >&2
  echo "$left" >&2
  status=1
fi
exit $status
