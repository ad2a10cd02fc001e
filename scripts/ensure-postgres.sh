#!/usr/bin/env bash
# The test suite starts its own PostgreSQL from the server binaries; install them if this machine lacks them.
set -euo pipefail
if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then exit 0; fi
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "PostgreSQL server binaries (initdb, pg_ctl) are missing: install your distribution's postgresql package." >&2
  exit 1
fi
echo "installing PostgreSQL server binaries"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
