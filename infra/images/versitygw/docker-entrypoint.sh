#!/bin/sh
# Entrypoint of the versity/versitygw:v1.8.0 look-alike, with the official image's interface:
# - arguments given: `versitygw ARGS...` (e.g. --port :9000 posix /data);
# - none: the command is built from VGW_ARGS (global flags), VGW_BACKEND (posix, scoutfs, s3,
#   azure, plugin), VGW_BACKEND_ARG (one argument, e.g. the posix directory) and
#   VGW_BACKEND_ARGS (more arguments).
# versitygw itself reads ROOT_ACCESS_KEY / ROOT_SECRET_KEY, VGW_PORT, VGW_REGION, VGW_HEALTH ...
set -eu

BIN=${VGW_BINARY:-/usr/local/bin/versitygw}
[ -x "$BIN" ] || { echo "docker-entrypoint: versitygw binary not found at $BIN" >&2; exit 1; }

if [ "$#" -gt 0 ]; then
  exec "$BIN" "$@"
fi

case ${VGW_BACKEND:-} in
  posix | scoutfs | s3 | azure | plugin) ;;
  "")
    echo "docker-entrypoint: no arguments and VGW_BACKEND is unset: set VGW_BACKEND (posix, scoutfs, s3, azure, plugin) or pass versitygw arguments" >&2
    exit 1
    ;;
  *)
    echo "docker-entrypoint: VGW_BACKEND invalid backend (was '$VGW_BACKEND')" >&2
    exit 1
    ;;
esac

# Global flags go before the backend subcommand; the ARGS variables split on blanks.
# shellcheck disable=SC2086
set -- ${VGW_ARGS:-} "$VGW_BACKEND"
if [ -n "${VGW_BACKEND_ARG:-}" ]; then
  set -- "$@" "$VGW_BACKEND_ARG"
fi
# shellcheck disable=SC2086
set -- "$@" ${VGW_BACKEND_ARGS:-}
exec "$BIN" "$@"
