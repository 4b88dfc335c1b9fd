#!/usr/bin/env bash
# Build the local systemd container images used by molecule and the demo.
#
#   photo-sync/systemd-base:bookworm   debootstrap'ed Debian 12 with systemd (docker import)
#   photo-sync/systemd-fleet:bookworm  FROM the base, with postgresql-15, python3-venv
#                                      and acl pre-baked so converges are fast (the roles
#                                      still install them when they are missing)
#
# Nothing is pulled from a registry. An image that already exists with the
# same recipe (label photo-sync.recipe) is reused; change this file or set
# BASE_IMAGE_REBUILD=1 to rebuild. Needs root and a running engine
# (scripts/docker-engine.sh).
#
# Environment:
#   DEBIAN_MIRROR        default http://deb.debian.org/debian
#   BASE_IMAGE           default photo-sync/systemd-base:bookworm
#   FLEET_IMAGE          default photo-sync/systemd-fleet:bookworm
#   BASE_IMAGE_REBUILD   1 = rebuild both even when present
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
base="${BASE_IMAGE:-photo-sync/systemd-base:bookworm}"
fleet="${FLEET_IMAGE:-photo-sync/systemd-fleet:bookworm}"
rebuild="${BASE_IMAGE_REBUILD:-0}"

say() { printf 'base-image: %s\n' "$*" >&2; }

"$here/docker-engine.sh"

recipe="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"

image_current() {
    [ "$rebuild" != 1 ] || return 1
    local label
    label="$(docker image inspect --format '{{ index .Config.Labels "photo-sync.recipe" }}' "$1" 2>/dev/null)" || return 1
    [ "$label" = "$recipe" ]
}

build_base() {
    command -v debootstrap >/dev/null 2>&1 || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null
    }
    local rootfs
    rootfs="$(mktemp -d /var/tmp/photo-sync-rootfs.XXXXXX)"
    trap 'rm -rf "$rootfs"' RETURN
    say "debootstrap bookworm from $mirror (about a minute)"
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,python3,python3-apt,sudo,dbus,iproute2,procps,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
        tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; return 1; }
    rm -f "$rootfs.log"
    cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
SOURCES
    # A container has no consoles, udev or hardware clock: keep systemd from
    # waiting on them. An empty machine-id is filled in at each boot.
    chroot "$rootfs" systemctl mask \
        getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
        systemd-remount-fs.service sys-kernel-config.mount sys-kernel-debug.mount \
        sys-kernel-tracing.mount systemd-firstboot.service >/dev/null 2>&1
    : >"$rootfs/etc/machine-id"
    rm -f "$rootfs/var/lib/dbus/machine-id"
    find "$rootfs/var/cache/apt/archives" -name '*.deb' -delete
    tar -C "$rootfs" -c . | docker import \
        -c 'CMD ["/lib/systemd/systemd"]' \
        -c 'STOPSIGNAL SIGRTMIN+3' \
        -c 'ENV container=docker' \
        -c "LABEL photo-sync.recipe=$recipe" \
        - "$base" >/dev/null
}

base_id() { docker image inspect --format '{{.Id}}' "$base"; }

build_fleet() {
    say "building $fleet FROM $base"
    docker build -q -t "$fleet" --label "photo-sync.recipe=$recipe" \
        --label "photo-sync.base=$(base_id)" - >/dev/null <<DOCKERFILE
FROM $base
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      postgresql-15 python3-venv acl \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
CMD ["/lib/systemd/systemd"]
DOCKERFILE
}

if image_current "$base"; then
    say "reusing $base"
else
    build_base
    say "built $base"
fi

# The fleet image is rebuilt whenever the base under it changed.
if image_current "$fleet" \
    && [ "$(docker image inspect --format '{{ index .Config.Labels "photo-sync.base" }}' "$fleet")" = "$(base_id)" ]; then
    say "reusing $fleet"
else
    build_fleet
    say "built $fleet"
fi
