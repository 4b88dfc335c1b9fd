#!/usr/bin/env python3
"""Assemble the photosync.fleet collection from this tree and build its tarball.

    scripts/build-collection.py [--out build]     # what `make collection` runs

The tree keeps its own layout (library/, module_utils/, roles/, playbooks/); the
collection is made from it, never edited by hand:

    build/collections/ansible_collections/photosync/fleet/   the assembled collection
    build/photosync-fleet-<version>.tar.gz                   ansible-galaxy's tarball

Only what a collection requires is rewritten: a module's import of module_utils and its
doc fragments, which a collection names by FQCN. The roles and playbooks are copied as
they are; inside a collection, unqualified module and role names resolve to the
collection itself first. A playbook whose file name is not a Python-style name gets an
alias that imports it (deploy_ho.yml for deploy-ho.yml), since FQCNs cannot hold a dash.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE, NAME = "photosync", "fleet"
FQCN = f"{NAMESPACE}.{NAME}"
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")

# (pattern, replacement) for module sources: what a collection requires, nothing more.
MODULE_REWRITES = (
    (re.compile(r"^from ansible\.module_utils\.(photo_sync_\w+) import", re.M),
     rf"from ansible_collections.{NAMESPACE}.{NAME}.plugins.module_utils.\1 import"),
    (re.compile(r"^(\s+- )(photo_sync\.\w+)$", re.M), rf"\1{FQCN}.\2"),
)


def version() -> str:
    """The photo_sync package's version, which the collection shares."""
    text = (ROOT / "src/photo_sync/__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def rewrite_module(source: str) -> str:
    for pattern, replacement in MODULE_REWRITES:
        source = pattern.sub(replacement, source)
    return source


def assemble(dest: Path) -> None:
    """Write the collection's files into `dest` (emptied first)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ROOT / "collection", dest, ignore=SKIP)
    galaxy = dest / "galaxy.yml"
    galaxy.write_text(re.sub(r"^version: .*$", f"version: {version()}", galaxy.read_text(),
                             count=1, flags=re.M))
    modules = dest / "plugins/modules"
    modules.mkdir(parents=True)
    for path in sorted((ROOT / "library").glob("*.py")):
        (modules / path.name).write_text(rewrite_module(path.read_text()))
    shutil.copytree(ROOT / "module_utils", dest / "plugins/module_utils", ignore=SKIP)
    shutil.copytree(ROOT / "plugins/doc_fragments", dest / "plugins/doc_fragments",
                    ignore=SKIP)
    for part in ("roles", "playbooks"):
        shutil.copytree(ROOT / part, dest / part, ignore=SKIP)
    # A playbook's FQCN is a Python-style name: deploy-ho.yml runs as photosync.fleet.deploy_ho,
    # a play that imports it (the file keeps its name; other playbooks import it by that).
    for playbook in sorted((dest / "playbooks").glob("*-*.yml")):
        alias = playbook.with_name(playbook.name.replace("-", "_"))
        alias.write_text(f"---\n# photosync.fleet.{alias.stem}: {playbook.name} by its FQCN.\n"
                         f"- name: Import {playbook.name}\n"
                         f"  ansible.builtin.import_playbook: {playbook.name}\n")
    shutil.copy(ROOT / "requirements.yml", dest / "requirements.yml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build",
                        help="where the collection tree and the tarball go (default: build/)")
    args = parser.parse_args(argv)
    dest = args.out / "collections/ansible_collections" / NAMESPACE / NAME
    assemble(dest)
    galaxy = Path(sys.executable).parent / "ansible-galaxy"
    build = subprocess.run([str(galaxy), "collection", "build", str(dest), "--force",
                            "--output-path", str(args.out)],
                           capture_output=True, text=True, check=False)
    if build.returncode != 0:
        print(build.stdout + build.stderr, file=sys.stderr)
        print("build-collection: ansible-galaxy could not build the collection; "
              f"its tree is in {dest}", file=sys.stderr)
        return 1
    tarball = args.out / f"{NAMESPACE}-{NAME}-{version()}.tar.gz"
    print(f"build-collection: {FQCN} {version()} assembled in {dest}")
    print(f"build-collection: {tarball}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
