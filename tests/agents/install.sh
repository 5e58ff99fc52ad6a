#!/usr/bin/env bash
# `make agents`: the real log agents that tests/agents/ drives, installed by the project.
#
# syslog-ng and rsyslog conflict as Debian packages (both provide system-log-daemon), so
# neither is installed system-wide: their .debs are fetched with `apt-get download` and
# unpacked with `dpkg -x` into .tools/agents/root. Only the shared libraries they link
# against (none of which conflict) are installed with apt-get. The OpenTelemetry JS SDK
# goes into .tools/node from the committed package-lock.json (`npm ci`).
#
# Idempotent: a stamp records what was unpacked; a second run with nothing changed only
# checks the stamp and the libraries (well under a second).
set -euo pipefail
cd "$(dirname "$0")/../.."

ROOT=.tools/agents/root
NODE_DIR=.tools/node
DEBS=(syslog-ng-core syslog-ng-mod-http syslog-ng-scl rsyslog rsyslog-elasticsearch)
# What the daemons and the plugins used by the tests link against (ldd of syslog-ng,
# libhttp.so, libaffile.so, libjson-plugin.so, rsyslogd, imfile.so, omelasticsearch.so).
LIBS=(libivykis0 libnet1 libjson-c5 libwrap0 libglib2.0-0 libcurl4 libpcre3 libcap2
    libssl3 libsystemd0 libestr0 libfastjson4 liblognorm5 libuuid1 libzstd1 zlib1g)
STAMP=.tools/agents/installed.txt
WANT="debs=${DEBS[*]} libs=${LIBS[*]} script=$(sha256sum "$0" | cut -c1-16)"

libs_present() {
    dpkg-query -W -f='${db:Status-Status}\n' "${LIBS[@]}" 2>/dev/null | grep -qvx installed && return 1
    [ "$(dpkg-query -W -f='${db:Status-Status}\n' "${LIBS[@]}" 2>/dev/null | wc -l)" -eq "${#LIBS[@]}" ]
}

apt_updated=no
apt_update_once() {
    if [ "$apt_updated" = no ]; then
        apt-get update -qq
        apt_updated=yes
    fi
}

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "make agents: installing Debian packages needs root (CI runs as root);" \
            "tests/agents/ skip the agents that are absent on this machine" >&2
        exit 1
    fi
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && libs_present; then
    echo "agents: syslog-ng and rsyslog already in $ROOT"
else
    need_root
    export DEBIAN_FRONTEND=noninteractive
    if ! libs_present; then
        apt_update_once
        apt-get install -y -qq --no-install-recommends "${LIBS[@]}" >/dev/null
    fi
    download=$(mktemp -d)
    trap 'rm -rf "$download"' EXIT
    # apt drops privileges to _apt for downloads; let it write the folder.
    chmod 777 "$download"
    if ! (cd "$download" && apt-get download -qq "${DEBS[@]}" 2>/dev/null); then
        apt_update_once
        (cd "$download" && apt-get download -qq "${DEBS[@]}")
    fi
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    for deb in "$download"/*.deb; do
        dpkg -x "$deb" "$ROOT"
    done
    (cd "$download" && ls ./*.deb) > .tools/agents/debs.txt
    echo "$WANT" > "$STAMP"
    echo "agents: unpacked $(tr '\n' ' ' < .tools/agents/debs.txt)into $ROOT"
fi

LOCK=tests/agents/js/package-lock.json
if [ -f "$NODE_DIR/package-lock.json" ] && cmp -s "$LOCK" "$NODE_DIR/package-lock.json" \
    && [ -d "$NODE_DIR/node_modules/@opentelemetry/sdk-logs" ]; then
    echo "agents: OpenTelemetry JS SDK already in $NODE_DIR"
else
    command -v npm >/dev/null || { echo "make agents: npm is missing (Node 20 ships it)" >&2; exit 1; }
    mkdir -p "$NODE_DIR"
    cp tests/agents/js/package.json "$LOCK" "$NODE_DIR/"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    echo "agents: OpenTelemetry JS SDK installed in $NODE_DIR"
fi
