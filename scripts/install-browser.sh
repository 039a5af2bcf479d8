#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (pytest -m browser); idempotent.
#   bash scripts/install-browser.sh
# Playwright for Python drives it with executable_path=/usr/bin/chromium: nothing is downloaded
# by `playwright install`. Needs root (or sudo) and an apt source; does nothing if present.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no apt-get here; install Chromium as /usr/bin/chromium by hand (browser tests skip without it)" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-browser: need root or sudo to apt-get install chromium" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q chromium
echo "installed: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
