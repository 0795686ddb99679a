#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine, with the compose v2 and buildx CLI plugins.
#
#   infra/engine/ensure-engine.sh    idempotent; ~1 s when everything is in place
#   infra/engine/stop-engine.sh      stops the dockerd only if this script started it
#
# 1. Engine: if `docker info` answers, it is left alone. Otherwise (root, Debian/apt): apt-get
#    installs docker.io and debootstrap where missing, dockerd starts in the background (its log
#    and a marker "started by ensure-engine.sh, pid N" go into $SANDBOX_ENGINE_DIR), and the
#    script waits, bounded, until `docker info` answers.
# 2. CLI plugins: where `docker compose` (v2) or `docker buildx` is missing, Debian trixie's
#    docker-compose / docker-buildx packages are fetched with `apt-get download` inside a
#    throw-away container of the local base image (infra/images/build-base.sh; the host's apt
#    sources stay untouched), unpacked with dpkg-deb -x, and their binaries put into
#    ${DOCKER_CONFIG:-~/.docker}/cli-plugins.
#
# Settings (environment):
#   SANDBOX_ENGINE_DIR     state dir: dockerd.log, the marker, step logs  (/var/lib/sandbox-engine)
#   SANDBOX_ENGINE_WAIT    seconds to wait for a started dockerd to answer (60)
#   SANDBOX_DEBIAN_MIRROR  Debian mirror for the plugin packages         (http://deb.debian.org/debian)
#   DOCKER_CONFIG          Docker CLI config dir; plugins go to $DOCKER_CONFIG/cli-plugins (~/.docker)
# Exits non-zero with one "ensure-engine: error: ..." line (after the tail of the step's log).
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
STATE_DIR=${SANDBOX_ENGINE_DIR:-/var/lib/sandbox-engine}
MARKER=$STATE_DIR/started-by-ensure-engine
DOCKERD_LOG=$STATE_DIR/dockerd.log
STEP_LOG=$STATE_DIR/ensure-engine.log
WAIT_SECS=${SANDBOX_ENGINE_WAIT:-60}
MIRROR=${SANDBOX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PLUGIN_DIR=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
BASE_IMAGE=${SANDBOX_BASE_IMAGE:-sandbox-base:bookworm}

say() { echo "ensure-engine: $*"; }
fail() { echo "ensure-engine: error: $*" >&2; exit 1; }
trap 'fail "unexpected failure at line $LINENO: $BASH_COMMAND"' ERR
CLEANUP=()
cleanup() { [[ ${#CLEANUP[@]} -eq 0 ]] || rm -rf "${CLEANUP[@]}"; }
trap cleanup EXIT

# run_logged DESCRIPTION CMD...: run CMD with its output in $STEP_LOG; on failure show the
# log's tail and fail with DESCRIPTION.
run_logged() {
  local desc=$1
  shift
  if ! "$@" >>"$STEP_LOG" 2>&1; then
    tail -n 15 "$STEP_LOG" | sed 's/^/  | /' >&2
    fail "$desc failed (log: $STEP_LOG)"
  fi
}

engine_answers() { timeout 20 docker info >/dev/null 2>&1; }

installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }

install_packages() {
  local missing=() pkg
  for pkg in docker.io debootstrap; do
    installed "$pkg" || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  local t0=$SECONDS
  say "installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  run_logged "apt-get update" apt-get update -q
  run_logged "apt-get install ${missing[*]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
  say "installed ${missing[*]} in $((SECONDS - t0)) s"
}

start_dockerd() {
  # A marker left by a dockerd that has died since: drop it.
  if [[ -f $MARKER ]]; then
    local old
    old=$(sed -n 's/^pid=//p' "$MARKER")
    if [[ -n $old ]] && kill -0 "$old" 2>/dev/null && [[ $(cat "/proc/$old/comm" 2>/dev/null) == dockerd ]] &&
      [[ $(awk '{print $3}' "/proc/$old/stat" 2>/dev/null) != Z ]]; then
      fail "dockerd pid $old (started by this script) runs but does not answer: see $DOCKERD_LOG"
    fi
    rm -f "$MARKER"
  fi
  command -v dockerd >/dev/null || fail "dockerd not found after installing docker.io"
  local t0=$SECONDS pid
  # setsid: the daemon outlives this script and the shell/job that ran it.
  setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  pid=$!
  {
    echo "# this script (infra/engine/ensure-engine.sh) started dockerd, pid $pid"
    echo "pid=$pid"
    echo "starttime=$(awk '{print $22}' "/proc/$pid/stat" 2>/dev/null || true)"
    echo "started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } >"$MARKER"
  local deadline=$((SECONDS + WAIT_SECS))
  until engine_answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$MARKER"
      tail -n 15 "$DOCKERD_LOG" | sed 's/^/  | /' >&2
      fail "dockerd exited at start (log: $DOCKERD_LOG)"
    fi
    ((SECONDS < deadline)) || fail "dockerd (pid $pid) did not answer within $WAIT_SECS s (log: $DOCKERD_LOG)"
    sleep 0.25
  done
  say "started dockerd (pid $pid) in $((SECONDS - t0)) s; log $DOCKERD_LOG, marker $MARKER"
}

# Fetch Debian trixie's docker-compose / docker-buildx packages in a throw-away container of
# the local base image and put their CLI plugin binaries into $PLUGIN_DIR.
install_plugins() {
  local want=("$@") t0=$SECONDS tmp
  say "fetching CLI plugins ${want[*]} (Debian trixie packages)"
  "$ROOT/infra/images/build-base.sh" || fail "the local base image $BASE_IMAGE could not be built"
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/sandbox-plugins.XXXXXX")
  CLEANUP+=("$tmp")
  local pkgs=("${want[@]}") p
  # shellcheck disable=SC2016  # the inner script expands its own variables
  run_logged "apt-get download ${pkgs[*]} in a $BASE_IMAGE container" \
    docker run --rm -v "$tmp:/out" -w /out -e MIRROR="$MIRROR" "$BASE_IMAGE" bash -ec '
      rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
      printf "Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n" \
        "$MIRROR" >/etc/apt/sources.list.d/trixie.sources
      apt-get update -q
      apt-get download -q "$@"
      chown -R '"$(id -u):$(id -g)"' /out' bash "${pkgs[@]}"
  mkdir -p "$PLUGIN_DIR" "$tmp/x"
  local deb bin
  for deb in "$tmp"/*.deb; do
    run_logged "dpkg-deb -x $(basename "$deb")" dpkg-deb -x "$deb" "$tmp/x"
  done
  for p in "${want[@]}"; do
    bin=$(find "$tmp/x" -path "*/cli-plugins/$p" \( -type f -o -type l \) | head -n 1)
    [[ -n $bin ]] || fail "no cli-plugins/$p in the downloaded packages"
    install -m 0755 "$(readlink -f "$bin")" "$PLUGIN_DIR/$p"
  done
  say "installed ${want[*]} into $PLUGIN_DIR in $((SECONDS - t0)) s"
}

mkdir -p "$STATE_DIR" 2>/dev/null || fail "cannot create the state dir $STATE_DIR (set SANDBOX_ENGINE_DIR)"
: >"$STEP_LOG"

command -v docker >/dev/null || fail "no docker CLI on PATH"

if engine_answers; then
  if [[ -f $MARKER ]]; then
    say "an engine was already running (dockerd pid $(sed -n 's/^pid=//p' "$MARKER"), started earlier by this script)"
  else
    say "an engine was already running (docker info answers); left as it is"
  fi
else
  [[ $(id -u) -eq 0 ]] || fail "no Docker engine answers, and starting one needs root"
  command -v apt-get >/dev/null || fail "no Docker engine answers, and this is not a Debian/apt machine"
  install_packages
  if engine_answers; then
    say "an engine answers after installing docker.io (started by the package, not by this script)"
  else
    start_dockerd
  fi
fi

missing=()
docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
docker buildx version >/dev/null 2>&1 || missing+=(docker-buildx)
if [[ ${#missing[@]} -gt 0 ]]; then
  install_plugins "${missing[@]}"
  docker compose version >/dev/null 2>&1 || fail "docker compose still fails after installing the plugin"
  docker buildx version >/dev/null 2>&1 || fail "docker buildx still fails after installing the plugin"
fi
say "ready: $(docker version -f 'engine {{.Server.Version}}' 2>/dev/null), $(docker compose version --short 2>/dev/null | sed 's/^/compose /'), $(docker buildx version 2>/dev/null | awk '{print "buildx", $2}')"
