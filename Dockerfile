# Multi-stage build of a static fleetcache binary on a non-root distroless runtime.
# The build step is `make build`, the same command developers run.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN make build VERSION=${VERSION}

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/bin/fleetcache /fleetcache
USER 65532:65532
ENTRYPOINT ["/fleetcache"]
