#!/usr/bin/env bash
# Installs the Synapse homeserver the end-to-end tests and the bench run
# (bridges/matrix/src/synapse.rs, feature `synapse`)
# into a Python virtualenv, once, plus an empty database with Synapse's schema
# already applied (each test's homeserver starts from a copy: about a second
# faster than creating the schema at every start). Idempotent and safe to run
# from many processes at once (flock); prints the venv's path as its last line.
#
#   SWITCHBOARD_SYNAPSE_VENV   where the venv lives
#                              (default ${XDG_CACHE_HOME:-$HOME/.cache}/switchboard/synapse-venv)
set -euo pipefail

VERSION=1.163.2
VENV=${SWITCHBOARD_SYNAPSE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard/synapse-venv}
READY="$VENV/.switchboard-ready-$VERSION"
TEMPLATE="$VENV/switchboard-template-$VERSION.db"

# Fast path, no lock: a complete install is there.
if [ -f "$READY" ] && [ -x "$VENV/bin/python" ]; then
  echo "$VENV"
  exit 0
fi

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
# Someone else may have finished while we waited for the lock.
if [ -f "$READY" ] && [ -x "$VENV/bin/python" ]; then
  echo "$VENV"
  exit 0
fi

installed() {
  [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" -c "import sys, synapse; sys.exit(synapse.__version__ != '$VERSION')" \
      >/dev/null 2>&1
}

if ! installed; then
  command -v python3 >/dev/null || { echo "python3 is required to install Synapse" >&2; exit 1; }
  echo "installing matrix-synapse==$VERSION into $VENV" >&2
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "matrix-synapse==$VERSION" >&2
  installed || { echo "matrix-synapse $VERSION did not install into $VENV" >&2; exit 1; }
fi

# The template database: the schema and every background update applied.
# Optional: without it the tests let Synapse create the schema at start.
if [ ! -f "$TEMPLATE" ]; then
  work=$(mktemp -d "$VENV/.template.XXXXXX")
  echo "ed25519 a_template $(head -c 32 /dev/urandom | base64 | tr -d '=')" >"$work/signing.key"
  cat >"$work/hs.yaml" <<EOF
server_name: localhost
report_stats: false
signing_key_path: "$work/signing.key"
media_store_path: "$work/media"
database:
  name: sqlite3
  args:
    database: "$work/homeserver.db"
EOF
  if "$VENV/bin/update_synapse_database" --database-config "$work/hs.yaml" \
    --run-background-updates >"$work/log" 2>&1 && [ ! -e "$work/homeserver.db-wal" ]; then
    mv "$work/homeserver.db" "$TEMPLATE"
  else
    echo "warning: no Synapse template database (tests create the schema at start):" >&2
    tail -n 20 "$work/log" >&2
  fi
  rm -rf "$work"
fi

touch "$READY"
echo "$VENV"
