#!/usr/bin/env bash
# Stop the dockerd that infra/engine/ensure-engine.sh started, and only that one.
#
#   infra/engine/stop-engine.sh
#
# Reads the marker ensure-engine.sh wrote ($SANDBOX_ENGINE_DIR/started-by-ensure-engine). No
# marker: the engine (if any) was started some other way and is left alone. Otherwise SIGTERM to
# that pid (checked to still be the same dockerd), a bounded wait, and the marker is removed.
# dockerd stops its containers on SIGTERM (up to its shutdown timeout, 15 s by default).
#
# Settings (environment):
#   SANDBOX_ENGINE_DIR        state dir shared with ensure-engine.sh  (/var/lib/sandbox-engine)
#   SANDBOX_ENGINE_STOP_WAIT  seconds to wait for dockerd to exit     (60)
set -Eeuo pipefail

STATE_DIR=${SANDBOX_ENGINE_DIR:-/var/lib/sandbox-engine}
MARKER=$STATE_DIR/started-by-ensure-engine
WAIT_SECS=${SANDBOX_ENGINE_STOP_WAIT:-60}

say() { echo "stop-engine: $*"; }
fail() { echo "stop-engine: error: $*" >&2; exit 1; }
trap 'fail "unexpected failure at line $LINENO: $BASH_COMMAND"' ERR

if [[ ! -f $MARKER ]]; then
  say "no marker ($MARKER): no engine started by ensure-engine.sh; nothing stopped"
  exit 0
fi

pid=$(sed -n 's/^pid=//p' "$MARKER")
want_start=$(sed -n 's/^starttime=//p' "$MARKER")
[[ $pid =~ ^[0-9]+$ ]] || fail "marker $MARKER holds no pid"

# The same process as the one started? (pid alive and not a zombie, named dockerd, same start time.)
same_dockerd() {
  kill -0 "$pid" 2>/dev/null || return 1
  [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]] || return 1
  [[ -z $want_start ]] || [[ $(awk '{print $22}' "/proc/$pid/stat" 2>/dev/null) == "$want_start" ]]
}

if ! same_dockerd; then
  rm -f "$MARKER"
  say "dockerd pid $pid (started by ensure-engine.sh) is no longer running; marker removed"
  exit 0
fi

t0=$SECONDS
kill -TERM "$pid"
deadline=$((SECONDS + WAIT_SECS))
while same_dockerd; do
  ((SECONDS < deadline)) || fail "dockerd pid $pid still runs $WAIT_SECS s after SIGTERM (marker kept)"
  sleep 0.25
done
rm -f "$MARKER"
say "stopped dockerd pid $pid in $((SECONDS - t0)) s"
