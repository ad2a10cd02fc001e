#!/usr/bin/env bash
# The browser tests drive Debian's Chromium through Playwright; install it if this machine lacks it.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Chromium is missing at /usr/bin/chromium: install your distribution's chromium package." >&2
  exit 1
fi
echo "installing Chromium"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
