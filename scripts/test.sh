#!/usr/bin/env bash
# The project's test command: README's "./scripts/test.sh"; .ci/run and `make test` call it.
# Installs redis-server when missing: the capacity tests start their own
# redis-server processes on free ports (no system Redis on 6379 is used).
# Installs llama-server when missing (scripts/install-llama-server.sh): the
# OpenAI-adapter and real-fleet tests start llama-server processes on free ports.
# Installs chromium when missing: the operator console's browser tests drive it headless.
# Installs curl when missing: the HTTP front door tests run it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
	echo "test.sh: installing redis-server (the capacity tests need redis-server and redis-cli)"
	SUDO=""
	if [ "$(id -u)" -ne 0 ]; then
		SUDO="sudo"
	fi
	export DEBIAN_FRONTEND=noninteractive
	if ! $SUDO apt-get install -y --no-install-recommends redis-server; then
		$SUDO apt-get update
		$SUDO apt-get install -y --no-install-recommends redis-server
	fi
	# The package may start a system service; the tests never use it.
fi

# llama.cpp's llama-server for the tests with real model servers (backends/openai, router): into the user cache,
# quiet when it is already there.
./scripts/install-llama-server.sh

# The operator console's browser tests drive Debian's chromium headless.
if ! command -v chromium >/dev/null 2>&1; then
	echo "test.sh: installing chromium (the console's browser tests need it)"
	SUDO=""
	if [ "$(id -u)" -ne 0 ]; then
		SUDO="sudo"
	fi
	export DEBIAN_FRONTEND=noninteractive
	if ! $SUDO apt-get install -y --no-install-recommends chromium >/dev/null; then
		$SUDO apt-get update >/dev/null
		$SUDO apt-get install -y --no-install-recommends chromium >/dev/null
	fi
fi

# The HTTP front door tests drive curl (-N for streams, --http2-prior-knowledge for h2c).
if ! command -v curl >/dev/null 2>&1; then
	echo "test.sh: installing curl (the HTTP front door tests need it)"
	SUDO=""
	if [ "$(id -u)" -ne 0 ]; then
		SUDO="sudo"
	fi
	export DEBIAN_FRONTEND=noninteractive
	if ! $SUDO apt-get install -y --no-install-recommends curl ca-certificates >/dev/null; then
		$SUDO apt-get update >/dev/null
		$SUDO apt-get install -y --no-install-recommends curl ca-certificates >/dev/null
	fi
fi

# The committed protobuf code must be what the pinned generators produce.
./scripts/proto.sh --check

go vet ./...
go test -race -count=1 -timeout 8m ./...

# Fuzz targets, a few seconds each (their committed seed corpora under testdata/fuzz already ran above as
# ordinary tests). A crash fails the run and leaves the input in the package's testdata/fuzz/<target>/:
# commit it as a regression seed with the fix. FUZZTIME=0 skips this step; FUZZTIME=1m fuzzes longer.
fuzztime=${FUZZTIME:-3s}
if [ "$fuzztime" != "0" ]; then
	while read -r target pkg; do
		if ! out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" 2>&1); then
			printf '%s\n' "$out" >&2
			echo "test.sh: fuzz target $target in $pkg failed; rerun: go test -run '^\$' -fuzz '^${target}\$' $pkg" >&2
			exit 1
		fi
	done <<-'EOF'
		FuzzParseFleet ./router/config/
		FuzzValidateRequest ./router/
		FuzzFileReaders ./loadtest/trace/
		FuzzSyntheticSpec ./loadtest/trace/
		FuzzParse ./loadtest/scenario/
		FuzzParseLoad ./backends/
		FuzzParseRequest ./router/openaihttp/
	EOF
	echo "test.sh: fuzzed 7 targets for $fuzztime each"
fi
