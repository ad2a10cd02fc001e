#!/usr/bin/env bash
# The infra tests scan infra/modules with checkov, whose pinned dependencies clash with the project's own; it gets a
# virtual environment of its own inside .venv (ignored by git, removed by `make clean`). Quick when already there.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=3.3.30
VENV=.venv/checkov
MARKER="$VENV/.installed-$VERSION"
if [ -f "$MARKER" ] && [ -x "$VENV/bin/checkov" ]; then exit 0; fi
echo "installing checkov $VERSION into $VENV"
rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "checkov==$VERSION"
touch "$MARKER"
