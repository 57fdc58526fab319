#!/bin/sh
# build-check.sh [OUTDIR]: exercise the image's build steps without Docker.
#
# Runs deploy/docker/go-build.sh, the very script the Dockerfile's builder
# stage runs, then checks that the Dockerfile still calls it and that every
# binary came out static, trimmed and stripped. `go test ./deploy/...` runs
# this; CI does too. With no OUTDIR the binaries go to a temporary directory.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

dockerfile=deploy/docker/Dockerfile
grep -v '^[[:space:]]*#' "$dockerfile" | grep -Fq 'sh deploy/docker/go-build.sh /out' || {
	echo "build-check: $dockerfile no longer builds with deploy/docker/go-build.sh" >&2
	exit 1
}

out=${1:-}
if [ -z "$out" ]; then
	out=$(mktemp -d)
	trap 'rm -rf "$out"' EXIT
fi
sh deploy/docker/go-build.sh "$out"

status=0
for bin in switchyard switchyardctl switchyard-sim switchyard-load grpc-health-probe; do
	if [ ! -x "$out/$bin" ]; then
		echo "build-check: $bin was not built" >&2
		status=1
		continue
	fi
	info=$(go version -m "$out/$bin")
	for want in 'CGO_ENABLED=0' '-trimpath=true'; do
		if ! printf '%s\n' "$info" | grep -Fq -- "$want"; then
			echo "build-check: $bin: build setting $want missing" >&2
			status=1
		fi
	done
	# Go leaves -ldflags out of the build info under -trimpath; check its effect:
	# -s -w strip the symbol table.
	if ! go tool nm "$out/$bin" 2>&1 | grep -q 'no symbols'; then
		echo "build-check: $bin: not stripped (-ldflags=\"-s -w\" missing)" >&2
		status=1
	fi
done
[ "$status" -eq 0 ] && echo "build-check: ok: $(ls "$out" | tr '\n' ' ')"
exit "$status"
