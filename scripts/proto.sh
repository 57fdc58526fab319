#!/usr/bin/env bash
# Generates the Go code for proto/switchyard/v1 with the pinned generators.
#   scripts/proto.sh          regenerate in place (make proto)
#   scripts/proto.sh --check  generate into a temp dir and fail if the committed code differs (CI)
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.5.1
PROTOC_VERSION=3.21.12 # Debian bookworm's protobuf-compiler

if ! command -v protoc >/dev/null 2>&1 || [ ! -f /usr/include/google/protobuf/timestamp.proto ]; then
	echo "proto.sh: installing protobuf-compiler and libprotobuf-dev (protoc and the well-known types)"
	SUDO=""
	[ "$(id -u)" -ne 0 ] && SUDO="sudo"
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev; }
fi
protoc --version | grep -q "$PROTOC_VERSION" || echo "proto.sh: warning: $(protoc --version) is not the pinned protoc $PROTOC_VERSION"

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"

out=proto
if [ "${1:-}" = "--check" ]; then
	out="$bin/out"
	mkdir -p "$out"
fi
PATH="$bin:$PATH" protoc -I proto \
	--go_out="$out" --go_opt=paths=source_relative \
	--go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
	proto/switchyard/v1/*.proto

if [ "${1:-}" = "--check" ]; then
	for f in "$out"/switchyard/v1/*.go; do
		if ! cmp -s "$f" "proto/switchyard/v1/$(basename "$f")"; then
			echo "proto.sh: proto/switchyard/v1/$(basename "$f") is stale: run 'make proto' and commit the result"
			diff -u "proto/switchyard/v1/$(basename "$f")" "$f" | head -20
			exit 1
		fi
	done
	echo "proto.sh: generated code is current"
fi
