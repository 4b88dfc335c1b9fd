#!/usr/bin/env bash
# Once per store, as root, for a store in ansible-pull mode (README "Stores behind NAT:
# ansible-pull mode"): bake it into the store image or run it by hand. Everything after
# this comes from the chain's repository through photo-sync-pull.timer.
#
#   store-pull-bootstrap.sh [SETTINGS]     (default /etc/photo-sync/pull-vars.yml)
#
# SETTINGS (root, 0600) is written by the chain beforehand; this script reads from it
# store_pull_repo_url, store_pull_branch (default main), store_pull_kit_url (https://,
# http:// or file://) and store_pull_kit_sha256. It installs git and python3-venv (apt),
# fetches and checks the kit, makes the venv with the kit's ansible-core (no package
# index), and runs the first ansible-pull, which applies the role and installs the timer.
set -euo pipefail

settings=${1:-/etc/photo-sync/pull-vars.yml}
home=/var/lib/photo-sync-pull
venv=/opt/photo-sync-pull/venv

die() { echo "store-pull-bootstrap: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and systemd units)"
[ -f "$settings" ] || die "no settings file $settings: write it first (README, 'Stores behind NAT')"
[ "$(stat -c '%U %a' "$settings")" = "root 600" ] \
    || die "$settings holds the store's secret: chown root:root and chmod 0600 it, then run again"

# Reads a top-level scalar of the settings file without a YAML parser (none yet): the
# keys this script needs are plain `key: value` lines.
setting() {
    sed -n -E "s/^$1:[[:space:]]*['\"]?([^'\"#]*[^'\"#[:space:]])['\"]?[[:space:]]*(#.*)?\$/\\1/p" \
        "$settings" | tail -n 1
}
repo=$(setting store_pull_repo_url)
branch=$(setting store_pull_branch)
branch=${branch:-main}
kit_url=$(setting store_pull_kit_url)
kit_sha=$(setting store_pull_kit_sha256)
[ -n "$repo" ] || die "set store_pull_repo_url in $settings"
[ -n "$kit_url" ] || die "set store_pull_kit_url in $settings"
[[ "$kit_sha" =~ ^[0-9a-f]{64}$ ]] || die "set store_pull_kit_sha256 in $settings (the kit's .sha256)"
# As playbooks/tasks/pull_gate.yml: the repository is what this store runs as root.
allow_file=$(setting store_pull_allow_file_url)
case "$repo" in
    *://*:*@*) die "store_pull_repo_url carries a password: use store_pull_ssh_key or a git credential helper" ;;
    [Hh][Tt][Tt][Pp][Ss]://?* | [Ss][Ss][Hh]://?*) ;;
    file:///*) [[ "$allow_file" =~ ^([Tt]rue|[Yy]es|1)$ ]] \
        || die "store_pull_repo_url is file://: test-only, set store_pull_allow_file_url: true" ;;
    *://*) die "store_pull_repo_url must be https://, ssh:// or git@host:path, not ${repo%%://*}://" ;;
    [A-Za-z0-9._-]*@[A-Za-z0-9.-]*:?*) ;;
    *) die "store_pull_repo_url must be https://, ssh:// or git@host:path" ;;
esac

if ! command -v git >/dev/null || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git python3-venv
fi

install -d -m 0755 "$home" "$home/kit"
archive="$home/photo-sync-pull-kit-$kit_sha.tar.gz"
if ! echo "$kit_sha  $archive" | sha256sum --check --status 2>/dev/null; then
    python3 - "$kit_url" "$archive.part" <<'PY'
import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=300) as src, open(sys.argv[2], "wb") as dest:
    shutil.copyfileobj(src, dest)
PY
    echo "$kit_sha  $archive.part" | sha256sum --check --status \
        || die "the kit from $kit_url does not match store_pull_kit_sha256: publish and name the same kit"
    mv "$archive.part" "$archive"
fi
kit="$home/kit/$kit_sha"
if [ ! -d "$kit" ]; then
    rm -rf "$kit.new" && mkdir -p "$kit.new"
    tar -xzf "$archive" --no-same-owner -C "$kit.new"
    mv "$kit.new" "$kit"
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --no-index --disable-pip-version-check \
    --find-links "$kit/pull/ansible" "$kit"/pull/ansible/ansible_core-*.whl

# The same command photo-sync-pull.service runs (the playbook writes that unit).
export ANSIBLE_COLLECTIONS_PATH="$kit/pull/collections" ANSIBLE_PIPELINING=true \
    ANSIBLE_PYTHON_INTERPRETER=auto_silent ANSIBLE_NOCOLOR=true \
    ANSIBLE_RETRY_FILES_ENABLED=false PYTHONUNBUFFERED=1
exec "$venv/bin/ansible-pull" --url "$repo" --checkout "$branch" --directory "$home/checkout" \
    --inventory localhost, --extra-vars "store_pull_settings=$settings" --extra-vars "@$settings" \
    playbooks/store-pull.yml
