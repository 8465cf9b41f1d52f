#!/usr/bin/env bash
# Installs schemathesis (the OpenAPI fuzzer the OpenAPI test runs against
# the served documents) into a Python virtualenv, once. Idempotent and safe
# to run from many processes at once (flock); prints the venv's path as its
# last line.
#
#   SWITCHBOARD_SCHEMATHESIS_VENV   where the venv lives
#       (default ${XDG_CACHE_HOME:-$HOME/.cache}/switchboard/schemathesis-venv)
set -euo pipefail

VERSION=4.32.5
VENV=${SWITCHBOARD_SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard/schemathesis-venv}
READY="$VENV/.switchboard-ready-$VERSION"

if [ -f "$READY" ] && [ -x "$VENV/bin/schemathesis" ]; then
  echo "$VENV"
  exit 0
fi
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if [ -f "$READY" ] && [ -x "$VENV/bin/schemathesis" ]; then
  echo "$VENV"
  exit 0
fi
command -v python3 >/dev/null || { echo "python3 is required to install schemathesis" >&2; exit 1; }
echo "installing schemathesis==$VERSION into $VENV" >&2
rm -rf "$VENV"
python3 -m venv "$VENV" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$VERSION" >&2
[ -x "$VENV/bin/schemathesis" ] || { echo "schemathesis did not install into $VENV" >&2; exit 1; }
touch "$READY"
echo "$VENV"
