#!/usr/bin/env bash
# `make images`: every image docker-compose.yml uses, from a registry or, where no registry
# answers, built here as a look-alike under the same tag (infra/images/README.md says why and
# what each look-alike leaves out).
#
#   infra/images/build-images.sh [IMAGE...]   all images, or only these (tag or folder name)
#   infra/images/build-images.sh --list       the tags, one per line (compare with
#                                             `docker compose config --images`)
#
# For each image, one line:
#   up to date   a look-alike built from the same inputs (label org.sandbox.lookalike.inputs,
#                a sha256 of its folder, the base recipe, extra inputs and the extra CA
#                certificates), or an image that came from a registry (no such label);
#   pulled       `docker pull` worked;
#   built        no registry answered: the look-alike was built from infra/images/<folder>/
#                on the local base image (infra/images/build-base.sh).
# Exits non-zero with one "build-images: error: ..." line (after the tail of the step's log).
#
# Settings (environment):
#   SANDBOX_EXTRA_CA_DIR   a folder of extra CA certificates (*.crt) the look-alikes trust, e.g.
#                          /usr/local/share/ca-certificates where TLS goes through an
#                          intercepting proxy: its *.crt replace the content of
#                          $SANDBOX_IMAGES_WORK/extra-ca/, which stays as it is when unset
#                          (empty at first) and is emptied by SANDBOX_EXTRA_CA_DIR=none.
#   SANDBOX_IMAGES_PULL    missing (default: try `docker pull` for an image that is not up to
#                          date) | never (build look-alikes without trying a registry)
#   SANDBOX_IMAGES_PULL_TIMEOUT  seconds for one pull (300)
#   SANDBOX_IMAGES_FORCE   1: rebuild the look-alikes even when up to date
#   SANDBOX_IMAGES_WORK    build contexts, logs, the extra-ca folder, the versitygw binary
#                          cache (.sandbox/images: git-ignored, outside infra/ which the
#                          project image copies)
#   SANDBOX_BASE_IMAGE     the local base image (sandbox-base:bookworm)
set -Eeuo pipefail

# The images docker-compose.yml uses, all profiles included: tag, then the look-alike's folder
# under infra/images/.
IMAGES=(
  "python:3.11-slim python"
  "apache/kafka:3.9.1 kafka"
  "apache/iceberg-rest-fixture:1.10.1 iceberg-rest"
  "versity/versitygw:v1.8.0 versitygw"
)

# Bump to rebuild every look-alike after a change this script makes to how they are built.
LOOKALIKE_REVISION=1
LABEL=org.sandbox.lookalike.inputs

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${SANDBOX_IMAGES_WORK:-$ROOT/.sandbox/images}
BASE_IMAGE=${SANDBOX_BASE_IMAGE:-sandbox-base:bookworm}
PULL=${SANDBOX_IMAGES_PULL:-missing}
PULL_TIMEOUT=${SANDBOX_IMAGES_PULL_TIMEOUT:-300}
FORCE=${SANDBOX_IMAGES_FORCE:-0}

say() { echo "build-images: $*"; }
fail() { echo "build-images: error: $*" >&2; exit 1; }
trap 'fail "unexpected failure at line $LINENO: $BASH_COMMAND"' ERR

# run_logged LOG DESCRIPTION CMD...: CMD's output goes to LOG; on failure, its tail and one line.
run_logged() {
  local log=$1 desc=$2
  shift 2
  if ! "$@" >>"$log" 2>&1; then
    tail -n 20 "$log" | sed 's/^/  | /' >&2
    fail "$desc failed (log: $log)"
  fi
}

list_tags() {
  local entry
  for entry in "${IMAGES[@]}"; do echo "${entry%% *}"; done
}

# ---------------------------------------------------------------------------------------------
# Inputs of each look-alike besides its folder, and the steps that fill its build context.

extra_inputs() { # folder -> files outside it that the look-alike is built from
  case $1 in
    iceberg-rest) echo "$ROOT/infra/iceberg-rest/pom.xml" ;;
    *) ;;
  esac
}

mvn_libs() { # POM PROPERTY DIR LOG: the pom's runtime jars into DIR
  command -v mvn >/dev/null || fail "mvn not found (Maven fetches the jars of the look-alike; apt-get install maven)"
  run_logged "$4" "mvn copy-dependencies of ${1#"$ROOT"/}" \
    mvn -q -B -Dstyle.color=never -f "$1" dependency:copy-dependencies "-D$2=$3"
}

versitygw_binary() { # VERSION LOG: VGW_BIN=the cached binary, built with the host's Go
  local version=$1 log=$2
  local cache=$WORK/cache/versitygw-$version
  VGW_BIN=$cache/versitygw
  if [[ ! -x $cache/versitygw ]]; then
    command -v go >/dev/null || fail "go not found (the versitygw look-alike builds its binary with Go >= 1.25)"
    rm -rf "$cache/.gobin"
    mkdir -p "$cache/.gobin"
    # As the official image: a static binary (CGO_ENABLED=0) with its version stamped in.
    run_logged "$log" "go install github.com/versity/versitygw/cmd/versitygw@$version" \
      env CGO_ENABLED=0 GOBIN="$cache/.gobin" go install -trimpath \
      -ldflags "-X=main.Version=$version -X=main.Build=go-install" \
      "github.com/versity/versitygw/cmd/versitygw@$version"
    mv "$cache/.gobin/versitygw" "$VGW_BIN"
    rm -rf "$cache/.gobin"
  fi
}

prepare_context() { # folder tag ctx log
  local folder=$1 tag=$2 ctx=$3 log=$4
  case $folder in
    python) ;;
    kafka) mvn_libs "$HERE/kafka/pom.xml" kafka.image.lib.dir "$ctx/libs" "$log" ;;
    iceberg-rest) mvn_libs "$ROOT/infra/iceberg-rest/pom.xml" iceberg.rest.lib.dir "$ctx/libs" "$log" ;;
    versitygw)
      versitygw_binary "${tag##*:}" "$log"
      cp "$VGW_BIN" "$ctx/versitygw"
      ;;
    *) fail "no build steps for the look-alike folder $folder" ;;
  esac
}

# ---------------------------------------------------------------------------------------------

# The extra CA certificates: $WORK/extra-ca/, (re)filled from SANDBOX_EXTRA_CA_DIR when set.
stage_extra_ca() {
  local dir=$WORK/extra-ca
  mkdir -p "$dir"
  if [[ -n ${SANDBOX_EXTRA_CA_DIR+set} ]]; then
    find "$dir" -mindepth 1 -delete
    if [[ $SANDBOX_EXTRA_CA_DIR != none && -n $SANDBOX_EXTRA_CA_DIR ]]; then
      [[ -d $SANDBOX_EXTRA_CA_DIR ]] || fail "SANDBOX_EXTRA_CA_DIR=$SANDBOX_EXTRA_CA_DIR is not a folder"
      local crt
      for crt in "$SANDBOX_EXTRA_CA_DIR"/*.crt; do
        [[ -f $crt ]] && cp "$crt" "$dir/"
      done
    fi
  fi
  local n
  n=$(find "$dir" -maxdepth 1 -name '*.crt' | wc -l)
  if [[ $n -gt 0 ]]; then
    say "extra CA certificates: $n ($dir)"
  else
    say "extra CA certificates: none"
  fi
}

inputs_hash() { # folder tag
  local folder=$1 tag=$2 f
  {
    echo "revision $LOOKALIKE_REVISION"
    echo "tag $tag"
    echo "base $BASE_IMAGE $(sha256sum <"$HERE/build-base.sh")"
    (cd "$HERE/$folder" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    for f in $(extra_inputs "$folder"); do
      echo "${f#"$ROOT"/} $(sha256sum <"$f")"
    done
    (cd "$WORK/extra-ca" && find . -maxdepth 1 -name '*.crt' -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
  } | sha256sum | cut -c1-64
}

ensure_base() {
  [[ -z ${BASE_READY:-} ]] || return 0
  "$HERE/build-base.sh" || fail "the local base image $BASE_IMAGE could not be built"
  BASE_READY=1
}

image_one() { # tag folder
  local tag=$1 folder=$2 t0=$SECONDS
  [[ -d $HERE/$folder ]] || fail "no look-alike folder infra/images/$folder for $tag"
  local hash current
  hash=$(inputs_hash "$folder" "$tag")
  if docker image inspect "$tag" >/dev/null 2>&1; then
    current=$(docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$tag" 2>/dev/null || true)
    if [[ -z $current || $current == "<no value>" ]]; then
      echo "$tag: up to date (registry image)"
      return 0
    fi
    if [[ $current == "$hash" && $FORCE != 1 ]]; then
      echo "$tag: up to date (look-alike ${hash:0:12})"
      return 0
    fi
  fi

  local log=$WORK/logs/$folder.log
  mkdir -p "$WORK/logs"
  : >"$log"
  local why="pull not tried (SANDBOX_IMAGES_PULL=never)"
  if [[ $PULL != never && $FORCE != 1 ]]; then
    if timeout "$PULL_TIMEOUT" docker pull -q "$tag" >>"$log" 2>&1; then
      echo "$tag: pulled in $((SECONDS - t0)) s"
      return 0
    fi
    why="docker pull failed: $(grep -q -i 'no such host' "$log" && echo "no registry host resolves" || echo "see $log")"
  fi

  ensure_base
  local ctx=$WORK/ctx/$folder
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp -a "$HERE/$folder/." "$ctx/"
  mkdir -p "$ctx/extra-ca"
  find "$WORK/extra-ca" -maxdepth 1 -name '*.crt' -exec cp {} "$ctx/extra-ca/" \;
  prepare_context "$folder" "$tag" "$ctx" "$log"
  run_logged "$log" "docker build of the $tag look-alike" \
    docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --label "$LABEL=$hash" --label "org.sandbox.lookalike.of=$tag" \
    --label "org.sandbox.lookalike.source=infra/images/$folder" \
    -t "$tag" "$ctx"
  rm -rf "$ctx"
  local size
  size=$(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%d MB", $1 / 1e6}')
  echo "$tag: built look-alike in $((SECONDS - t0)) s ($size; $why)"
}

main() {
  local selected=() arg entry
  for arg in "$@"; do
    case $arg in
      --list) list_tags; return 0 ;;
      -h | --help) sed -n '2,/^set -E/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; return 0 ;;
      -*) fail "unknown option $arg (see --help)" ;;
      *) selected+=("$arg") ;;
    esac
  done
  case $PULL in missing | never) ;; *) fail "SANDBOX_IMAGES_PULL must be missing or never, not $PULL" ;; esac

  timeout 20 docker info >/dev/null 2>&1 || fail "no Docker engine answers (infra/engine/ensure-engine.sh starts one)"
  mkdir -p "$WORK"
  stage_extra_ca

  local t0=$SECONDS n=0 tag folder found
  for arg in "${selected[@]}"; do
    found=0
    for entry in "${IMAGES[@]}"; do
      [[ $arg == "${entry%% *}" || $arg == "${entry##* }" ]] && found=1
    done
    [[ $found -eq 1 ]] || fail "$arg is not one of the images ($(list_tags | tr '\n' ' '))"
  done
  for entry in "${IMAGES[@]}"; do
    tag=${entry%% *}
    folder=${entry##* }
    if [[ ${#selected[@]} -gt 0 ]]; then
      found=0
      for arg in "${selected[@]}"; do [[ $arg == "$tag" || $arg == "$folder" ]] && found=1; done
      [[ $found -eq 1 ]] || continue
    fi
    image_one "$tag" "$folder"
    n=$((n + 1))
  done
  say "$n images ready in $((SECONDS - t0)) s"
}

main "$@"
