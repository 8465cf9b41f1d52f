#!/bin/bash
# Runs a switchboard binary and, every half second while it runs, writes
# each of its threads' name, context switches (voluntary, involuntary) and
# CPU ticks (user, system) to $OUT/threads.<pid>.txt; the last write before
# it exits is what it used. Give it to the bench as the binary:
#
#   SB=$PWD/target/release/switchboard OUT=/tmp \
#     cargo run --release -p switchboard-bench -- --binary $PWD/bench/tools/per-thread.sh --scenario 1
#
# Each server the bench starts leaves one file (per run: unthrottled, paced).
# The bench's own CPU column then counts this script's pid, which is the
# server's (exec below): its figures stay right.
set -u
out="${OUT:-/tmp}"
(
  while kill -0 $$ 2>/dev/null; do
    snapshot=""
    for t in /proc/$$/task/*; do
      name=$(cat "$t/comm" 2>/dev/null) || continue
      switches=$(awk '/ctxt_switches/ {printf "%s ", $2}' "$t/status" 2>/dev/null)
      ticks=$(awk '{print $14, $15}' "$t/stat" 2>/dev/null)
      snapshot+="$name $switches$ticks"$'\n'
    done
    # Threads that vanish as it exits would leave a partial snapshot.
    kill -0 $$ 2>/dev/null || break
    printf '%s' "$snapshot" > "$out/threads.$$.tmp" && mv "$out/threads.$$.tmp" "$out/threads.$$.txt"
    sleep 0.5
  done
) &
exec "${SB:?set SB to the switchboard binary (an absolute path)}" "$@"
