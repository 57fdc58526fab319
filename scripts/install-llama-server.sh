#!/bin/sh
# Installs llama.cpp's llama-server (Debian's llama.cpp-tools 0.7.0, with the C runtime it was built against) into
# DIR without touching the system: the packages are unpacked there and the binary runs through their own loader.
#   scripts/install-llama-server.sh [DIR]     -> DIR/llama-server (a wrapper; give it absolute model paths)
# DIR defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/llama.cpp, where the tests look for it.
# Idempotent and quiet when the server is already there. The .deb files are taken from $SWITCHYARD_LLAMA_DEBS or
# ../shared/realservers/debs when present (offline); otherwise downloaded from the Debian mirror apt already uses,
# suite "sid" (llama.cpp is not packaged for bookworm).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
D=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/llama.cpp}
mkdir -p "$D"
D=$(cd "$D" && pwd)
if [ -x "$D/llama-server" ] && "$D/llama-server" --version >/dev/null 2>&1; then
  exit 0
fi
echo "install-llama-server: installing llama-server into $D" >&2
PKGS="llama.cpp-tools libllama0 libggml0 libc6 libstdc++6 libgcc-s1 libgomp1 libssl3t64 libzstd1 zlib1g"
DEBS=${SWITCHYARD_LLAMA_DEBS:-$ROOT/../shared/realservers/debs}
rm -rf "$D/debs" "$D/root"
mkdir -p "$D/debs" "$D/root"
if ls "$DEBS"/*.deb >/dev/null 2>&1; then
  cp "$DEBS"/*.deb "$D/debs/"
else
  A=$D/apt
  mkdir -p "$A/lists/partial" "$A/cache/archives/partial"
  MIRROR=$(grep -hoE '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '{print $2}' | grep -E '/debian/?$' | head -1)
  [ -n "$MIRROR" ] || { echo "install-llama-server: no Debian mirror configured for apt" >&2; exit 1; }
  echo "deb $MIRROR sid main" >"$A/sources.list"
  O="-o Dir::Etc::SourceList=$A/sources.list -o Dir::Etc::SourceParts=/nonexistent -o Dir::State::Lists=$A/lists -o Dir::Cache=$A/cache -o APT::Sandbox::User=root"
  # shellcheck disable=SC2086
  apt-get $O update -qq
  # shellcheck disable=SC2086
  (cd "$D/debs" && apt-get $O download -qq $PKGS)
fi
for f in "$D"/debs/*.deb; do dpkg-deb -x "$f" "$D/root"; done
L=$D/root/usr/lib/x86_64-linux-gnu
cat >"$D/llama-server.tmp" <<EOS
#!/bin/sh
# ggml finds its CPU backend in the working directory, so model paths given to this wrapper must be absolute.
cd $L/ggml/backends0 && exec $L/ld-linux-x86-64.so.2 --library-path $L/llama:$L $D/root/usr/bin/llama-server "\$@"
EOS
chmod +x "$D/llama-server.tmp"
mv "$D/llama-server.tmp" "$D/llama-server"
"$D/llama-server" --version 2>&1 | tail -2 >&2
