#!/usr/bin/env bash
# Installs axe-core (the accessibility engine the browser test injects into
# the admin page) from npm into a cache directory, once. Idempotent and safe
# to run from many processes at once (flock); prints the path of
# axe.min.js as its last line.
#
#   SWITCHBOARD_AXE_DIR   where it lives
#                         (default ${XDG_CACHE_HOME:-$HOME/.cache}/switchboard/axe-core)
set -euo pipefail

VERSION=4.14.1
DIR=${SWITCHBOARD_AXE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard/axe-core}
FILE="$DIR/node_modules/axe-core/axe.min.js"
READY="$DIR/.switchboard-ready-$VERSION"

if [ -f "$READY" ] && [ -f "$FILE" ]; then
  echo "$FILE"
  exit 0
fi
mkdir -p "$DIR"
exec 9>"$DIR.lock"
flock 9
if [ -f "$READY" ] && [ -f "$FILE" ]; then
  echo "$FILE"
  exit 0
fi
command -v npm >/dev/null || { echo "npm is required to install axe-core" >&2; exit 1; }
echo "installing axe-core@$VERSION into $DIR" >&2
npm install --prefix "$DIR" --no-audit --no-fund --silent "axe-core@$VERSION" >&2
[ -f "$FILE" ] || { echo "axe-core did not install into $DIR" >&2; exit 1; }
touch "$READY"
echo "$FILE"
