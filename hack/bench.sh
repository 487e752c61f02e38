#!/usr/bin/env bash
# make bench: every benchmark, then one summary table. Raw output goes to
# .cache/bench/raw.txt, the table to .cache/bench/summary.md (and stdout).
# Takes about 20 minutes on 2 cores (seeding 3 real clusters with 10k pods each is 2 of them).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
cache=${FLEETCACHE_CACHE:-$repo/.cache}
export FLEETCACHE_BIN=$(hack/build-bins.sh)
export FLEETCACHE_TEST_ROOT=$cache/test
export PATH=$FLEETCACHE_BIN:$PATH
out=$cache/bench
mkdir -p "$out"
: > "$out/raw.txt"
run() { go test -run '^$' -timeout 60m "$@" 2>&1 | grep -v '^[IEW][0-9]\{4\} ' | tee -a "$out/raw.txt"; }

echo "== machine" | tee -a "$out/raw.txt"
{ go version; nproc; grep -m1 'model name' /proc/cpuinfo || true; free -g | sed -n 2p; } | tee -a "$out/raw.txt"
run -bench RetainedBytes -benchtime 3x ./clusters/
run -bench Ingest -benchtime 10x ./internal/benchapi/
run -bench Scaling -benchtime 1x ./internal/benchapi/
run -bench 'Get' -benchtime 200000x ./aggregator/
run -bench 'List|Count' -benchtime 20x ./aggregator/
# Scans (issue #26): a count with a field selector no index answers over 1M realistic
# pods, read from the stored bytes and, in the same run, by decoding (the path before);
# then what ingest and cheap queries wait while 4 goroutines (the index) or 4 clients
# (the HTTP API, with its admission) run it. Each builds its 1M-pod fleet (1-2 minutes).
run -bench 'FieldScan|ScanLoad' -benchtime 1x ./aggregator/
run -bench FieldCountLoad -benchtime 1x ./internal/server/
run -bench HTTPUnderLoad -benchtime 400x ./internal/server/
# Serving speed (issue #13): the server's cost per object at 100k pods, a realistic pod's
# JSON, and cheap requests under a mixed load (with and without list admission).
run -bench ServeList -benchtime 2x ./internal/server/
run -bench MixedLoad -benchtime 1x ./internal/server/
run -bench ObjectJSON ./internal/wire/
run -bench 'FleetQueryVsKubectl|RealFleetInitialSync|RealFleetQueryVsKubectl|DaemonRSS|ClientGoInformerSync' -benchtime 3x ./e2e/
run -bench 'Freshness' -benchtime 1x ./e2e/
# A fleet of its own (3 × 5,000 pods): fleetcache against kubectl run once per context,
# the contexts in parallel; heap per cached object.
FLEETCACHE_BENCH_PODS=5000 run -bench 'RealFleetServing|RealFleetHeapPerObject' -benchtime 3x ./e2e/
# Many small clusters: 200 contexts spread over the 3 clusters (the demo seed), kubectl
# once per context, all at once, against one kubectl through fleetcache.
run -bench ManyContextsServing -benchtime 5x ./e2e/
# Memory (issue #17): the same fleet cached by plain typed informers (with and without
# managedFields) and by fleetcache, one process each, heap and RSS; then a synthetic
# fleet of 1M realistic pods (about 3 minutes and 3 GiB).
FLEETCACHE_BENCH_PODS=5000 run -bench 'RealFleetMemoryVsInformers' -benchtime 1x ./e2e/
FLEETCACHE_BENCH_FLEET_PODS=1000000 run -bench SyntheticFleetMemory -benchtime 1x ./internal/benchapi/

echo
go run ./hack/benchsummary < "$out/raw.txt" | tee "$out/summary.md"
