"""The ansible-pull kit's archive (scripts/fleet-wheels.py --pull): a store fetches a kit
only when its sha256 changes, so the same contents must pack to the same bytes, and the
layout must be what playbooks/store-pull.yml and store-pull-bootstrap.sh unpack."""

import importlib.util
import os
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fleet-wheels.py"


@pytest.fixture(scope="module")
def fleet_wheels():
    spec = importlib.util.spec_from_file_location("fleet_wheels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_kit(root: Path) -> Path:
    kit = root / "pull"
    (kit / "ansible").mkdir(parents=True)
    (kit / "ansible" / "ansible_core-2.19.0-py3-none-any.whl").write_bytes(b"wheel bytes")
    plugin = kit / "collections" / "ansible_collections" / "ansible" / "posix" / "plugins"
    plugin.mkdir(parents=True)
    (plugin / "acl.py").write_text("# module\n")
    os.chmod(plugin / "acl.py", 0o700)
    return kit


def test_same_contents_pack_to_the_same_bytes(tmp_path, fleet_wheels):
    kit = make_kit(tmp_path / "one")
    first = tmp_path / "kit.tar.gz"
    assert fleet_wheels.pack(kit, first) is True
    before = first.read_bytes()
    # Later build: same contents, other times, owner bits and creation order.
    other = make_kit(tmp_path / "two")
    for path in other.rglob("*"):
        os.utime(path, (1_900_000_000, 1_900_000_000))
    assert fleet_wheels.pack(other, first) is False
    assert first.read_bytes() == before
    # Different contents: a different archive.
    (other / "ansible" / "ansible_core-2.19.0-py3-none-any.whl").write_bytes(b"new wheel")
    assert fleet_wheels.pack(other, first) is True
    assert first.read_bytes() != before


def test_archive_layout_and_modes(tmp_path, fleet_wheels):
    archive = tmp_path / "kit.tar.gz"
    fleet_wheels.pack(make_kit(tmp_path), archive)
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert "pull/ansible/ansible_core-2.19.0-py3-none-any.whl" in members
    acl = members["pull/collections/ansible_collections/ansible/posix/plugins/acl.py"]
    assert (acl.uid, acl.gid, acl.mode) == (0, 0, 0o755)
    assert members["pull/ansible/ansible_core-2.19.0-py3-none-any.whl"].mode == 0o644
    assert all(name == "pull" or name.startswith("pull/") for name in members)
