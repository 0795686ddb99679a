#!/usr/bin/env bash
# Build the local base image (Debian bookworm, minbase) unless its tag exists already.
#
#   infra/images/build-base.sh        (build-images.sh and infra/engine/ensure-engine.sh call it)
#
# debootstrap --variant=minbase bookworm into a temp dir, apt sources for bookworm,
# bookworm-updates and bookworm-security, apt lists and caches emptied, the apt tweaks of
# Debian's official image (no .deb caches kept), then
#   tar -C <dir> -c . | docker import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' - <tag>
# ~30-55 s, ~120 MB. Needs root (debootstrap) and a running engine.
#
# Settings (environment):
#   SANDBOX_BASE_IMAGE              the tag                 (sandbox-base:bookworm)
#   SANDBOX_DEBIAN_MIRROR           Debian mirror           (http://deb.debian.org/debian)
#   SANDBOX_DEBIAN_SECURITY_MIRROR  Debian security mirror  (http://deb.debian.org/debian-security)
set -Eeuo pipefail

TAG=${SANDBOX_BASE_IMAGE:-sandbox-base:bookworm}
MIRROR=${SANDBOX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SANDBOX_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm

say() { echo "build-base: $*"; }
fail() { echo "build-base: error: $*" >&2; exit 1; }
trap 'fail "unexpected failure at line $LINENO: $BASH_COMMAND"' ERR

docker image inspect "$TAG" >/dev/null 2>&1 && exit 0

[[ $(id -u) -eq 0 ]] || fail "building $TAG needs root (debootstrap)"
if ! command -v debootstrap >/dev/null; then
  command -v apt-get >/dev/null || fail "debootstrap is missing (and no apt-get to install it)"
  say "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null 2>&1 ||
    { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null 2>&1; } ||
    fail "apt-get install debootstrap failed"
fi

t0=$SECONDS
work=$(mktemp -d "${TMPDIR:-/var/tmp}/sandbox-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
log=$work/debootstrap.log
if ! debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$log" 2>&1; then
  tail -n 15 "$log" | sed 's/^/  | /' >&2
  # keep the log: the temp dir goes away
  cp "$log" "${TMPDIR:-/tmp}/sandbox-base-debootstrap.log" 2>/dev/null || true
  fail "debootstrap $SUITE from $MIRROR failed (log: ${TMPDIR:-/tmp}/sandbox-base-debootstrap.log)"
fi

# apt sources: debootstrap writes only "$SUITE main".
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

# As Debian's official image: keep no downloaded .deb files or apt binary caches in layers.
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'APTCONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APTCONF

# Empty apt lists and caches, and nothing of this host (the engine provides these at run time).
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
  "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/* "$rootfs"/root/.bash_history
mkdir -p "$rootfs/var/lib/apt/lists/partial" "$rootfs/var/cache/apt/archives/partial"
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/hostname"
[[ ! -e $rootfs/etc/machine-id ]] || : >"$rootfs/etc/machine-id"

if ! tar --numeric-owner --xattrs -C "$rootfs" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
  docker import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' \
    -m "debootstrap --variant=minbase $SUITE $MIRROR" - "$TAG" >/dev/null; then
  fail "docker import of the $SUITE rootfs as $TAG failed"
fi
say "built $TAG in $((SECONDS - t0)) s ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%d MB", $1/1e6}'))"
