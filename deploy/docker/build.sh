#!/bin/sh
# build.sh [docker buildx build args...]: build an image from
# deploy/docker/Dockerfile with its base images pinned by digest.
#
# Reads GO_IMAGE_DIGEST and RUNTIME_IMAGE_DIGEST from the environment or,
# when unset there, from deploy/docker/digests.env, and refuses to build
# unless both are sha256:<64 hex> (the Dockerfile has no default for them).
# Run from anywhere; the build context is the repository root.
#   deploy/docker/build.sh -t switchyard:dev
#   deploy/docker/build.sh --target tools -t switchyard-tools:dev
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
env_file=${DIGESTS_FILE:-$root/deploy/docker/digests.env}
get() {
	eval "v=\${$1:-}"
	if [ -z "$v" ] && [ -f "$env_file" ]; then
		v=$(sed -n "s/^$1=//p" "$env_file" | tail -n 1)
	fi
	printf '%s' "$v"
}
go_digest=$(get GO_IMAGE_DIGEST)
rt_digest=$(get RUNTIME_IMAGE_DIGEST)
status=0
for pair in "GO_IMAGE_DIGEST=$go_digest" "RUNTIME_IMAGE_DIGEST=$rt_digest"; do
	name=${pair%%=*}
	value=${pair#*=}
	if ! printf '%s' "$value" | grep -Eq '^sha256:[0-9a-f]{64}$'; then
		echo "build.sh: $name is ${value:-unset}: set it to the base image's sha256:<64 hex> digest in $env_file (see the comments there)" >&2
		status=1
	fi
done
[ "$status" -eq 0 ] || exit 1
exec docker buildx build -f "$root/deploy/docker/Dockerfile" \
	--build-arg GO_IMAGE_DIGEST="$go_digest" --build-arg RUNTIME_IMAGE_DIGEST="$rt_digest" "$@" "$root"
