#!/usr/bin/env bash
# The C load generator of benchmarks/ingest.py: Debian's wrk and the LuaJIT it links
# against, fetched with `apt-get download` and unpacked with `dpkg -x` into .tools/wrk
# (no system install, as tests/agents/install.sh does). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=.tools/wrk
DEBS=(wrk libluajit-5.1-2 libluajit-5.1-common)
if [ -x "$ROOT/usr/bin/wrk" ]; then
    echo "wrk: already in $ROOT"
    exit 0
fi
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
chmod 777 "$download"  # apt drops privileges to _apt for downloads
if ! (cd "$download" && apt-get download -qq "${DEBS[@]}" 2>/dev/null); then
    apt-get update -qq
    (cd "$download" && apt-get download -qq "${DEBS[@]}")
fi
mkdir -p "$ROOT"
for deb in "$download"/*.deb; do
    dpkg -x "$deb" "$ROOT"
done
LD_LIBRARY_PATH="$ROOT/usr/lib/x86_64-linux-gnu" "$ROOT/usr/bin/wrk" --version | head -1 || true
