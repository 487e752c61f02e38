# fleetcache. The two commands a new machine needs are `make demo` and `make test`.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The Dockerfile builds with exactly this command line.
LDFLAGS := -s -w -X github.com/fleetcache/fleetcache/internal/version.Version=$(VERSION)
export FLEETCACHE_CACHE ?= $(CURDIR)/.cache

.PHONY: build bins demo test bench fleet-up fleet-down fmt vet

## build: the fleetcache binary in bin/ (static, version-stamped), and bin/kubectl-fleet,
## the same binary as a kubectl plugin
BINDIR ?= bin
build:
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(BINDIR)/fleetcache ./cmd/fleetcache
	ln -sf fleetcache $(BINDIR)/kubectl-fleet

## bins: etcd, kube-apiserver, kubectl and the mixed fleet's kube-apiserver-1.32 into
## .cache/bin (cold: ~6 min, plus the old apiserver; then cached)
bins:
	@hack/build-bins.sh >/dev/null

## demo: a local fleet of 3 real clusters, seeded, and fleetcache serving it
demo: build bins
	hack/demo.sh

## test: every test, unit and integration, against real local clusters it starts itself
test: bins
	hack/test.sh

## bench: every benchmark (memory, ingest, queries, real fleet, scaling) and a summary table
bench: bins
	hack/bench.sh

fleet-up: bins
	hack/fleet.sh up

fleet-down:
	hack/fleet.sh down

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	go vet ./...
