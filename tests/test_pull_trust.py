"""The pull mode's trust gate (README "Stores behind NAT: ansible-pull mode"): the settings
checks of playbooks/tasks/pull_gate.yml, and ansible-pull --verify-commit against a pinned
GnuPG keyring, with real git and gpg: a commit signed by the pinned key runs its playbook,
an unsigned one or one signed by another key stops before any task runs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GATE = ROOT / "playbooks" / "tasks" / "pull_gate.yml"
FPR = "0123456789ABCDEF0123456789ABCDEF01234567"

pytestmark = pytest.mark.skipif(not (shutil.which("git") and shutil.which("gpg")),
                                reason="needs git and gpg")


def run_gate(tmp_path, **settings):
    play = tmp_path / "gate.yml"
    play.write_text(f"- hosts: localhost\n  connection: local\n  gather_facts: false\n"
                    f"  tasks:\n    - ansible.builtin.import_tasks: {GATE}\n")
    args = [str(BIN / "ansible-playbook"), "-i", "localhost,", str(play)]
    args += ["-e", json.dumps(settings)]
    return subprocess.run(args, capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "ANSIBLE_NOCOLOR": "1"})


@pytest.mark.parametrize("url", [
    "git://git.example.invalid/photo-sync.git",
    "http://git.example.invalid/photo-sync.git",
    "https://deploy:hunter2@git.example.invalid/photo-sync.git",
    "file:///srv/photo-sync.git",
])
def test_the_gate_refuses_an_unsafe_repository_url(tmp_path, url):
    out = run_gate(tmp_path, store_pull_repo_url=url, store_pull_signing_fingerprints=[FPR])
    assert out.returncode != 0
    assert "store_pull_repo_url must be https://, ssh:// or git@host:path" in out.stdout
    assert "hunter2" not in out.stdout + out.stderr


@pytest.mark.parametrize("url,extra", [
    ("https://git.example.invalid/photo-sync.git", {}),
    ("ssh://git@git.example.invalid/chain/photo-sync.git", {}),
    ("git@git.example.invalid:chain/photo-sync.git", {}),
    ("file:///srv/photo-sync.git", {"store_pull_allow_file_url": True}),
])
def test_the_gate_accepts_https_ssh_and_a_test_only_file_url(tmp_path, url, extra):
    out = run_gate(tmp_path, store_pull_repo_url=url,
                   store_pull_signing_fingerprints=[FPR.lower()], **extra)
    assert out.returncode == 0, out.stdout


def test_the_gate_refuses_a_pull_with_no_pinned_signing_key(tmp_path):
    out = run_gate(tmp_path, store_pull_repo_url="https://git.example.invalid/p.git")
    assert out.returncode != 0
    assert "store_pull_signing_fingerprints" in out.stdout


def gpg(home, *args, **kw):
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", *args], check=True,
                          capture_output=True, **kw)


def make_key(home, uid):
    home.mkdir(mode=0o700)
    gpg(home, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
    out = gpg(home, "--with-colons", "--list-keys", uid, text=True).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


@pytest.fixture(scope="module")
def signers(tmp_path_factory):
    """The chain's signing key, another key, and the store's pinned keyring (only the
    chain's public key, with ownertrust): the keyring a pull store is to pin (the pull unit
    does not build it yet). gpg starts an agent per keyring; they are stopped at the end."""
    base = tmp_path_factory.mktemp("gpg")
    chain, other, pinned = base / "chain", base / "other", base / "pinned"
    chain_fpr = make_key(chain, "chain <chain@example.invalid>")
    other_fpr = make_key(other, "other <other@example.invalid>")
    public = gpg(chain, "--armor", "--export", chain_fpr).stdout
    pinned.mkdir(mode=0o700)
    gpg(pinned, "--import", input=public)
    gpg(pinned, "--import-ownertrust", input=f"{chain_fpr}:6:\n".encode())
    yield {"chain": (chain, chain_fpr), "other": (other, other_fpr), "pinned": pinned}
    for home in (chain, other, pinned):
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"],
                       capture_output=True, check=False)


def commit(repo, message, signer=None):
    """A commit of a one-task playbook that writes its marker file."""
    (repo / "site.yml").write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.copy:\n        dest: \"{{ marker }}\"\n"
        f"        content: {message}\n")
    env = {**os.environ, "GNUPGHOME": str(signer[0])} if signer else dict(os.environ)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    sign = [f"-S{signer[1]}"] if signer else ["--no-gpg-sign"]
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t",
                    "-c", "user.email=t@example.invalid", "commit", "-q", *sign, "-m", message],
                   check=True, env=env)


def pull(tmp_path, bare, pinned):
    marker = tmp_path / "marker"
    out = subprocess.run(
        [str(BIN / "ansible-pull"), "--url", f"file://{bare}", "--checkout", "wave-1",
         "--directory", str(tmp_path / "checkout"), "--inventory", "localhost,",
         "--verify-commit", "--extra-vars", f"marker={marker}", "site.yml"],
        capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "GNUPGHOME": str(pinned), "ANSIBLE_NOCOLOR": "1",
             "ANSIBLE_PYTHON_INTERPRETER": sys.executable})
    return out, marker


@pytest.mark.parametrize("signer,runs", [("chain", True), (None, False), ("other", False)])
def test_ansible_pull_runs_only_a_commit_signed_by_the_pinned_key(tmp_path, signers, signer, runs):
    work, bare = tmp_path / "work", tmp_path / "repo.git"
    subprocess.run(["git", "init", "-q", "-b", "wave-1", str(work)], check=True)
    commit(work, "signed-first", signers["chain"])
    commit(work, "the-head", signers[signer] if signer else None)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    out, marker = pull(tmp_path, bare, signers["pinned"])
    if runs:
        assert out.returncode == 0, out.stdout + out.stderr
        assert marker.read_text() == "the-head"
    else:
        assert out.returncode != 0
        assert "Failed to verify GPG signature" in out.stdout + out.stderr
        assert not marker.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the bootstrap runs as root only")
@pytest.mark.parametrize("url,says", [
    ("git://git.example.invalid/p.git", "not git://"),
    ("http://git.example.invalid/p.git", "not http://"),
    ("https://deploy:hunter2@git.example.invalid/p.git", "carries a password"),
    ("file:///srv/photo-sync.git", "set store_pull_allow_file_url: true"),
])
def test_the_bootstrap_refuses_an_unsafe_repository_url_before_it_installs_anything(
        tmp_path, url, says):
    settings = tmp_path / "pull-vars.yml"
    settings.write_text(f"store_pull_repo_url: {url}\nstore_pull_kit_url: file:///nowhere\n"
                        f"store_pull_kit_sha256: {'0' * 64}\n")
    settings.chmod(0o600)
    out = subprocess.run(["bash", str(ROOT / "scripts" / "store-pull-bootstrap.sh"),
                          str(settings)], capture_output=True, text=True)
    assert out.returncode == 2
    assert says in out.stderr
    assert "hunter2" not in out.stderr
