#!/usr/bin/env bash
# `make agents` (CI runs it): headless Chromium and its driver from Debian's packages, for
# tests/console/test_browser.py (which fails, not skips, without them under CI=true).
# Idempotent: nothing to do once both binaries are on PATH.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    echo "console: chromium and chromedriver already installed"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "make agents: installing chromium needs root (CI runs as root);" \
        "tests/console/test_browser.py skips without it outside CI" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "console: installed $(chromium --version 2>/dev/null | head -1)"
