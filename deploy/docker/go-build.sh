#!/bin/sh
# go-build.sh OUTDIR: the one `go build` command line of the switchyard image.
#
# The Dockerfile's builder stage runs this file, and so does build-check.sh
# (CI, where no Docker engine runs): both build exactly the same way, so the
# image's build steps are exercised without Docker. Edit the flags here only.
# GOOS/GOARCH come from the environment (the Dockerfile sets them from
# TARGETOS/TARGETARCH for multi-arch images).
set -eu
out=${1:?usage: go-build.sh OUTDIR}
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$out/" \
	./cmd/switchyard ./cmd/switchyardctl ./cmd/switchyard-sim ./cmd/switchyard-load \
	github.com/grpc-ecosystem/grpc-health-probe
