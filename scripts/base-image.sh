#!/usr/bin/env bash
# Build the local systemd container images used by molecule and the demo.
#
#   photo-sync/systemd-base:bookworm   debootstrap'ed Debian 12 with systemd (docker import)
#   photo-sync/systemd-fleet:bookworm  FROM the base, with the packages the roles install
#                                      (postgresql 15, python3-psycopg2, python3-venv, acl)
#                                      pre-baked so converges are fast; the roles still
#                                      install them where they are missing
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

# image_current IMAGE RECIPE: the image exists and was built from this recipe.
image_current() {
    [ "$rebuild" != 1 ] || return 1
    local label
    label="$(docker image inspect --format '{{ index .Config.Labels "photo-sync.recipe" }}' "$1" 2>/dev/null)" || return 1
    [ "$label" = "$2" ]
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
        -c 'ENV container=docker' \
        -c "LABEL photo-sync.recipe=$base_recipe" \
        - "$base" >/dev/null
}

base_id() { docker image inspect --format '{{.Id}}' "$base"; }

build_fleet() {
    say "building $fleet FROM $base"
    local buildlog
    buildlog="$(mktemp)"
    # The legacy builder needs nothing pulled; its deprecation notice goes to the log.
    trap 'rm -f "$buildlog"' RETURN
    export DOCKER_BUILDKIT=0
    if ! printf '%s\n' "$fleet_dockerfile" | docker build -q -t "$fleet" \
        --label "photo-sync.recipe=$fleet_recipe" --label "photo-sync.base=$(base_id)" - \
        >/dev/null 2>"$buildlog"
    then
        tail -n 30 "$buildlog" >&2
        return 1
    fi
}

# Each image is rebuilt when its own recipe changes (a hash of its build steps).
fleet_dockerfile="FROM $base
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
      postgresql postgresql-client python3-psycopg2 python3-venv acl \\
 && apt-get clean
STOPSIGNAL SIGRTMIN+3
CMD [\"/lib/systemd/systemd\"]"
base_recipe="$(declare -f build_base | sha256sum | cut -c1-16)"
fleet_recipe="$(printf '%s' "$fleet_dockerfile" | sha256sum | cut -c1-16)"

if image_current "$base" "$base_recipe"; then
    say "reusing $base"
else
    build_base
    say "built $base"
fi

# The fleet image is rebuilt whenever the base under it changed.
if image_current "$fleet" "$fleet_recipe" \
    && [ "$(docker image inspect --format '{{ index .Config.Labels "photo-sync.base" }}' "$fleet")" = "$(base_id)" ]; then
    say "reusing $fleet"
else
    build_fleet
    say "built $fleet"
fi

# Earlier builds of these images, now untagged, only take disk space.
docker image prune -f --filter "label=photo-sync.recipe" >/dev/null
