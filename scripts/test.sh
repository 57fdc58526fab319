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

# apt_install PACKAGE REASON COMMAND...: installs a Debian package when any of the commands is missing, quietly
# when they are all there. The packages may start system services; the tests never use them (they start their
# own instances on free loopback ports).
apt_install() {
	local pkg=$1 why=$2 missing=0 c
	shift 2
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || missing=1
	done
	[ "$missing" = 1 ] || return 0
	echo "test.sh: installing $pkg ($why)"
	local sudo=""
	[ "$(id -u)" -ne 0 ] && sudo="sudo"
	if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends $pkg >/dev/null; then
		$sudo apt-get update >/dev/null
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends $pkg >/dev/null
	fi
}

apt_install redis-server "the capacity tests start redis-server processes" redis-server redis-cli
apt_install chromium "the console's browser tests drive it headless" chromium
apt_install "curl ca-certificates" "the HTTP front door tests run curl" curl

# llama.cpp's llama-server for the tests with real model servers (backends/openai, router): into the user cache,
# quiet when it is already there.
./scripts/install-llama-server.sh

# The committed protobuf code must be what the pinned generators produce.
./scripts/proto.sh --check

go vet ./...
# -timeout is per package: deploy's TestImageBuildWithoutDocker compiles every binary again with the image's
# -trimpath flags, cloud SDKs included (its own cache keys), minutes on a cold cache of a 2-core machine.
go test -race -count=1 -timeout 15m ./...

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
