#!/usr/bin/env bash
# Make a Docker engine available for molecule and the demo fleet.
#
# Idempotent: does nothing when `docker info` already answers. Otherwise
# installs Debian's docker.io (and debootstrap, which base-image.sh needs)
# when dockerd is missing, starts dockerd in the background with its log in
# a file, and waits until the daemon answers. Needs root on Debian 12.
#
# Environment:
#   DOCKERD_LOG       where dockerd writes its log (default /var/log/photo-sync-dockerd.log)
#   DOCKERD_TIMEOUT   seconds to wait for `docker info` (default 60)
set -euo pipefail

log="${DOCKERD_LOG:-/var/log/photo-sync-dockerd.log}"
timeout="${DOCKERD_TIMEOUT:-60}"

say() { printf 'docker-engine: %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
    say "engine already running"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    say "no Docker engine answers and starting one needs root: run as root or start dockerd yourself"
    exit 1
fi

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet; update only when needed.
    if ! apt-get install -y --no-install-recommends "$@" >/dev/null; then
        apt-get update -qq
        apt-get install -y --no-install-recommends "$@" >/dev/null
    fi
}

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    say "starting dockerd (log: $log)"
    mkdir -p "$(dirname "$log")"
    # setsid + nohup: the daemon outlives this script and the shell that ran it.
    setsid nohup dockerd >>"$log" 2>&1 </dev/null &
fi

for _ in $(seq "$timeout"); do
    if docker info >/dev/null 2>&1; then
        say "engine ready ($(docker version --format '{{.Server.Version}}'))"
        exit 0
    fi
    sleep 1
done

say "dockerd did not answer within ${timeout}s; last lines of $log:"
tail -n 30 "$log" >&2 || true
exit 1
