"""The photosync.fleet collection that `make collection` builds from this tree.

`make test`'s collection stage (scripts/collection-check.sh) runs ansible-test sanity on
the installed tarball; these tests hold what that stage cannot see: that the collection
carries the tree's code with nothing changed but what a collection requires, so a fix
made in library/ or roles/ is the fix users of the collection get.
"""

from __future__ import annotations

import difflib
import filecmp
import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

import photo_sync

ROOT = Path(__file__).resolve().parent.parent


def _build_script():
    spec = importlib.util.spec_from_file_location("build_collection",
                                                  ROOT / "scripts/build-collection.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("collection") / "build"
    assert _build_script().main(["--out", str(out)]) == 0
    return out


def _collection(built: Path) -> Path:
    return built / "collections/ansible_collections/photosync/fleet"


def test_tarball_is_the_package_version_with_its_dependencies(built):
    tarball = built / f"photosync-fleet-{photo_sync.__version__}.tar.gz"
    with tarfile.open(tarball) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))
        names = set(tar.getnames())
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == (
        "photosync", "fleet", photo_sync.__version__)
    # What the roles call outside ansible.builtin must install with the collection.
    assert {"community.postgresql", "ansible.posix"} <= set(info["dependencies"])
    for module in (ROOT / "library").glob("*.py"):
        assert f"plugins/modules/{module.name}" in names
    assert "meta/runtime.yml" in names and "plugins/doc_fragments/photo_sync.py" in names


@pytest.mark.parametrize("module", sorted(p.name for p in (ROOT / "library").glob("*.py")))
def test_modules_change_only_where_a_collection_requires(built, module):
    tree = (ROOT / "library" / module).read_text().splitlines()
    shipped = (_collection(built) / "plugins/modules" / module).read_text().splitlines()
    changed = [line[1:] for line in difflib.unified_diff(tree, shipped, lineterm="", n=0)
               if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed, "the module imports module_utils and needs its FQCN"
    for line in changed:
        assert ("module_utils.photo_sync_common import" in line
                or line.strip() in ("- photo_sync.database", "- photo_sync.ho",
                                    "- photosync.fleet.photo_sync.database",
                                    "- photosync.fleet.photo_sync.ho")), line


def test_roles_and_playbooks_are_the_trees(built):
    for part in ("roles", "playbooks"):
        compare = filecmp.dircmp(ROOT / part, _collection(built) / part,
                                 ignore=["__pycache__"])
        stack = [compare]
        while stack:
            here = stack.pop()
            assert not here.diff_files and not here.left_only, (part, here.left,
                                                                here.diff_files,
                                                                here.left_only)
            stack.extend(here.subdirs.values())


def test_dashed_playbooks_have_an_fqcn_alias(built):
    playbooks = _collection(built) / "playbooks"
    dashed = sorted(p.name for p in (ROOT / "playbooks").glob("*-*.yml"))
    assert dashed, "the tree has deploy-ho.yml and store-pull.yml"
    for name in dashed:
        alias = yaml.safe_load((playbooks / name.replace("-", "_")).read_text())
        assert alias == [{"name": f"Import {name}",
                          "ansible.builtin.import_playbook": name}]


def test_modules_document_their_attributes(built):
    doc = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "--json",
                          "photosync.fleet.photo_sync_pull", "photosync.fleet.pg_bytea_schema"],
                         capture_output=True, text=True, timeout=120, cwd=built,
                         env={"ANSIBLE_COLLECTIONS_PATH": str(built / "collections"),
                              "PATH": str(Path(sys.executable).parent), "HOME": str(built)})
    assert doc.returncode == 0, doc.stderr
    docs = json.loads(doc.stdout)
    pull = docs["photosync.fleet.photo_sync_pull"]["doc"]
    schema = docs["photosync.fleet.pg_bytea_schema"]["doc"]
    # The shared options come from the fragment, with the module's own beside them.
    assert {"ho_url", "store_secret", "ca_bundle", "mode"} <= set(pull["options"])
    assert pull["attributes"]["check_mode"]["support"] == "full"
    assert pull["attributes"]["diff_mode"]["support"] == "none"
    assert schema["attributes"]["diff_mode"]["support"] == "full"


def test_execution_environment_carries_the_collection_and_the_wheels(built, tmp_path):
    """`ansible-builder create` (the build context, no image: this machine has no
    registry to pull the base image from) from the repository's definition."""
    root = built.parent  # `built` is <root>/build: the layout the definition expects
    shutil.copy(ROOT / "execution-environment.yml", root)
    wheels = subprocess.run([sys.executable, str(ROOT / "scripts/fleet-wheels.py"), str(ROOT),
                             str(built / "wheels")],
                            capture_output=True, text=True, timeout=300, check=False)
    assert wheels.returncode == 0, wheels.stderr
    context = tmp_path / "context"
    create = subprocess.run([str(Path(sys.executable).parent / "ansible-builder"), "create",
                             "-f", "execution-environment.yml", "-c", str(context)],
                            capture_output=True, text=True, timeout=120, cwd=root, check=False)
    assert create.returncode == 0, create.stdout + create.stderr
    build = context / "_build"
    requirements = yaml.safe_load((build / "requirements.yml").read_text())
    names = {entry["name"] for entry in requirements["collections"]}
    assert {"/build/photosync-fleet", "community.postgresql", "ansible.posix",
            "community.crypto"} <= names
    galaxy = yaml.safe_load((build / "photosync-fleet/galaxy.yml").read_text())
    assert galaxy["version"] == photo_sync.__version__
    assert list((build / "wheels/photo-sync").glob(
        f"photo_sync-{photo_sync.__version__}-*.whl"))
    containerfile = next(context.glob("[CD]*file")).read_text()
    assert "COPY _build/wheels /usr/share/photo-sync/wheels" in containerfile
    assert "ansible-galaxy collection install" in containerfile
