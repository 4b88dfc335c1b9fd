#!/usr/bin/env bash
# Once per store, as root, for a store in ansible-pull mode (README "Stores behind NAT:
# ansible-pull mode"): bake it into the store image or run it by hand. Everything after
# this comes from the chain's repository through photo-sync-pull.timer.
#
#   store-pull-bootstrap.sh [SETTINGS]          (default /etc/photo-sync/pull-vars.yml)
#   store-pull-bootstrap.sh --trust [SETTINGS]  only (re)write the trust files below;
#                                               playbooks/store-pull.yml runs it every run
#
# SETTINGS (root, 0600) is written by the chain beforehand; this script reads from it
# store_pull_repo_url, store_pull_branch (default main), store_pull_kit_url (https://,
# http:// or file://), store_pull_kit_sha256, store_pull_signing_key (the armored public
# key(s) that sign the wave branches) and, to reach the repository, store_pull_ssh_key
# with store_pull_ssh_known_hosts, or store_pull_git_credentials. It installs git, gpg,
# ssh and python3-venv (apt) as needed, fetches and checks the kit, makes the venv with
# the kit's ansible-core (no package index), writes the trust files, and runs the first
# ansible-pull with --verify-commit, which applies the role and installs the timer.
#
# The trust files, root-only: HOME/trust/gnupg (0700), the pinned keyring holding only
# the signing key(s), with ownertrust: `git verify-commit` accepts a head signed by one
# of them and nothing else; HOME/trust/deploy-key, known_hosts and git-credentials
# (0600); ENV_FILE (0600), what photo-sync-pull.service reads as its EnvironmentFile:
# GIT_SSH_COMMAND (that key, StrictHostKeyChecking=yes against that known_hosts) and
# git's credential helper. No secret is ever on a command line or printed.
# HOME, VENV and ENV_FILE are /var/lib/photo-sync-pull, /opt/photo-sync-pull/venv and
# /etc/photo-sync/pull.env unless PHOTO_SYNC_PULL_HOME, _VENV, _ENV_FILE say otherwise
# (the playbook passes its own; tests use scratch folders).
set -euo pipefail

mode=run
if [ "${1:-}" = --trust ]; then mode=trust; shift; fi
settings=${1:-/etc/photo-sync/pull-vars.yml}
home=${PHOTO_SYNC_PULL_HOME:-/var/lib/photo-sync-pull}
venv=${PHOTO_SYNC_PULL_VENV:-/opt/photo-sync-pull/venv}
envfile=${PHOTO_SYNC_PULL_ENV_FILE:-/etc/photo-sync/pull.env}

die() { echo "store-pull-bootstrap: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and systemd units)"
[ -f "$settings" ] || die "no settings file $settings: write it first (README, 'Stores behind NAT')"
[ "$(stat -c '%U %a' "$settings")" = "root 600" ] \
    || die "$settings holds the store's secret: chown root:root and chmod 0600 it, then run again"

# Reads a top-level scalar of the settings file without a YAML parser (none before the
# venv): the keys checked before anything is installed are plain `key: value` lines.
setting() {
    sed -n -E "s/^$1:[[:space:]]*['\"]?([^'\"#]*[^'\"#[:space:]])['\"]?[[:space:]]*(#.*)?\$/\\1/p" \
        "$settings" | tail -n 1
}
truthy() { [[ "$1" =~ ^([Tt]rue|[Yy]es|1)$ ]]; }
repo=$(setting store_pull_repo_url)
branch=$(setting store_pull_branch)
branch=${branch:-main}
kit_url=$(setting store_pull_kit_url)
kit_sha=$(setting store_pull_kit_sha256)
[ -n "$repo" ] || die "set store_pull_repo_url in $settings"
[ -n "$kit_url" ] || die "set store_pull_kit_url in $settings"
[[ "$kit_sha" =~ ^[0-9a-f]{64}$ ]] || die "set store_pull_kit_sha256 in $settings (the kit's .sha256)"
# As playbooks/tasks/pull_gate.yml: the repository is what this store runs as root.
ssh_url=false
case "$repo" in
    *://*:*@*) die "store_pull_repo_url carries a password: use store_pull_ssh_key or store_pull_git_credentials" ;;
    [Hh][Tt][Tt][Pp][Ss]://?*) ;;
    [Ss][Ss][Hh]://?*) ssh_url=true ;;
    file:///*) truthy "$(setting store_pull_allow_file_url)" \
        || die "store_pull_repo_url is file://: test-only, set store_pull_allow_file_url: true" ;;
    *://*) die "store_pull_repo_url must be https://, ssh:// or git@host:path, not ${repo%%://*}://" ;;
    [A-Za-z0-9._-]*@[A-Za-z0-9.-]*:?*) ssh_url=true ;;
    *) die "store_pull_repo_url must be https://, ssh:// or git@host:path" ;;
esac
if $ssh_url && ! grep -q '^store_pull_ssh_known_hosts:' "$settings"; then
    die "store_pull_repo_url is ssh: set store_pull_ssh_known_hosts in $settings (the git server's host key, pinned)"
fi
verify=(--verify-commit)
if ! grep -q '^store_pull_signing_key:' "$settings"; then
    truthy "$(setting store_pull_insecure_unsigned_commits)" \
        || die "set store_pull_signing_key in $settings (the armored public key that signs the wave branches; README 'Stores behind NAT')"
    verify=()
    echo "store-pull-bootstrap: WARNING: store_pull_insecure_unsigned_commits: no commit signature is checked; whoever can push to $branch or serve $repo is root on this store" >&2
fi

if [ "$mode" = run ]; then
    packages=()
    command -v git >/dev/null || packages+=(git)
    [ ${#verify[@]} -eq 0 ] || command -v gpg >/dev/null || packages+=(gpg)
    $ssh_url && ! command -v ssh >/dev/null && packages+=(openssh-client)
    python3 -c 'import ensurepip' 2>/dev/null || packages+=(python3-venv)
    if [ ${#packages[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
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
fi

# The trust files, from the settings read whole (the kit's ansible-core brought PyYAML).
# Prints {"changed": [...]}: the files it rewrote.
install -d -m 0755 "$home"
"$venv/bin/python" - "$settings" "$home" "$envfile" <<'PY'
import json, os, shutil, subprocess, sys
import yaml

settings_path, home, env_path = sys.argv[1:4]
with open(settings_path, encoding="utf-8") as f:
    settings = yaml.safe_load(f) or {}
trust = os.path.join(home, "trust")
os.makedirs(trust, mode=0o700, exist_ok=True)
os.chmod(trust, 0o700)
changed = []


def die(msg):
    print(f"store-pull-bootstrap: {msg}", file=sys.stderr)
    sys.exit(2)


def text(key):
    value = settings.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        die(f"{key} in {settings_path} must be text (a YAML block: `{key}: |`)")
    return value if value.endswith("\n") else value + "\n"


def put(path, data, mode=0o600):
    """Writes data (or removes the file for None) only when it differs: root-only."""
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
    except FileNotFoundError:
        old = None
    if data is None:
        if old is not None:
            os.remove(path)
            changed.append(os.path.basename(path))
        return None
    if old != data or os.stat(path).st_mode & 0o777 != mode:
        fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
        os.chmod(path + ".new", mode)
        os.replace(path + ".new", path)
        changed.append(os.path.basename(path))
    return path


signing_key = text("store_pull_signing_key")
if signing_key is not None:
    if "PRIVATE KEY BLOCK" in signing_key or "BEGIN PGP PUBLIC KEY BLOCK" not in signing_key:
        die("store_pull_signing_key must be the armored PUBLIC key(s) that sign the wave "
            "branches (gpg --armor --export FINGERPRINT), never a secret key")
elif settings.get("store_pull_insecure_unsigned_commits") is not True:
    die(f"set store_pull_signing_key in {settings_path} (the armored public key that signs "
        "the wave branches; README 'Stores behind NAT')")
gnupg = os.path.join(trust, "gnupg")
key_file = put(os.path.join(trust, "signing-key.asc"), signing_key, 0o644)
if key_file is None:
    if os.path.exists(gnupg):
        shutil.rmtree(gnupg)
        changed.append("gnupg")
elif "signing-key.asc" in changed or not os.path.isdir(gnupg):
    # Built beside the old keyring and swapped in whole: a run never sees half of one.
    new = gnupg + ".new"
    shutil.rmtree(new, ignore_errors=True)
    os.mkdir(new, 0o700)
    gpg = ["gpg", "--homedir", new, "--batch", "--quiet", "--no-autostart"]
    # Judged by what gpg says it imported, not its exit code: with no agent (none is
    # needed for public keys) gpg may fail after importing.
    done = subprocess.run(gpg + ["--status-fd", "1", "--import", key_file],
                          capture_output=True, text=True)
    listed = subprocess.run(gpg + ["--with-colons", "--list-keys"], capture_output=True,
                            text=True).stdout.splitlines()
    primaries = [listed[i + 1].split(":")[9] for i, line in enumerate(listed[:-1])
                 if line.startswith("pub:") and listed[i + 1].startswith("fpr:")]
    if "[GNUPG:] IMPORT_OK" not in done.stdout or not primaries:
        shutil.rmtree(new)
        die(f"gpg could not import store_pull_signing_key: {done.stderr.strip()}")
    subprocess.run(gpg + ["--import-ownertrust"], check=True, capture_output=True,
                   input="".join(f"{fpr}:6:\n" for fpr in primaries), text=True)
    subprocess.run(["gpgconf", "--homedir", new, "--kill", "all"], capture_output=True,
                   check=False)
    old = gnupg + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.isdir(gnupg):
        os.rename(gnupg, old)
    os.rename(new, gnupg)
    shutil.rmtree(old, ignore_errors=True)
    changed.append("gnupg")

ssh_key, known_hosts = text("store_pull_ssh_key"), text("store_pull_ssh_known_hosts")
if ssh_key is not None and known_hosts is None:
    die("store_pull_ssh_key needs store_pull_ssh_known_hosts (the git server's host key "
        "line(s), e.g. from ssh-keyscan checked against the server): the host key is pinned")
ssh_key = put(os.path.join(trust, "deploy-key"), ssh_key)
known_hosts = put(os.path.join(trust, "known_hosts"), known_hosts)
credentials = put(os.path.join(trust, "git-credentials"), text("store_pull_git_credentials"))

env = ["# Written by store-pull-bootstrap.sh from the pull settings: how git reaches the",
       "# chain's repository. photo-sync-pull.service's EnvironmentFile; root only."]
if known_hosts:
    ssh = f"ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile={known_hosts}"
    if ssh_key:
        ssh += f" -o IdentitiesOnly=yes -i {ssh_key}"
    env.append(f'GIT_SSH_COMMAND="{ssh}"')
if credentials:
    env += ["GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=credential.helper",
            f'GIT_CONFIG_VALUE_0="store --file={credentials}"']
put(env_path, "\n".join(env) + "\n")
print(json.dumps({"changed": changed}))
PY
[ "$mode" = run ] || exit 0

# The same command photo-sync-pull.service runs (the playbook writes that unit), with
# the same environment.
set -a
# shellcheck disable=SC1090
. "$envfile"
set +a
export GNUPGHOME="$home/trust/gnupg" ANSIBLE_COLLECTIONS_PATH="$home/checkout/collections:$kit/pull/collections" \
    ANSIBLE_PIPELINING=true ANSIBLE_PYTHON_INTERPRETER=auto_silent ANSIBLE_NOCOLOR=true \
    ANSIBLE_RETRY_FILES_ENABLED=false PYTHONUNBUFFERED=1
exec "$venv/bin/ansible-pull" --url "$repo" --checkout "$branch" --directory "$home/checkout" \
    "${verify[@]}" --inventory localhost, --extra-vars "store_pull_settings=$settings" \
    --extra-vars "@$settings" playbooks/store-pull.yml
