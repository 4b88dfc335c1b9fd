"""Bring image files into HO: bytes to S3, metadata and checksums to the catalog.

A new photo gets version 1; changed bytes get version + 1; the same bytes
change nothing. Object keys carry the content hash, so the catalog never
points at bytes other than the ones its checksum describes, even while an
import overwrites a photo that stores are downloading.

Whatever lands in the import folder reaches every store, so only regular
image files are taken: symbolic links (to files or folders) are never
followed, and a file is opened with O_NOFOLLOW and checked again after it is
open, so a link swapped in after the scan is refused too; the bytes must be
JPEG, PNG, WebP or GIF by their magic number, whatever the name says; a name
must be UTF-8 without control characters (every other name syncs, through the
gateway too); and a file over PHOTO_SYNC_HO_MAX_PHOTO_BYTES (the edge's cap)
is not read. Every
file left out is named in the summary with the reason.
"""

from __future__ import annotations

import csv
import os
import stat
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from photo_sync.errors import ConfigError, PhotoSyncError
from photo_sync.protocol import Checksums
from photo_sync.ho import catalog
from photo_sync.ho.settings import MAX_PHOTO_BYTES
from photo_sync.ho.storage import Storage

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}
# Stable product ids for files without a product map: the same name, the same product.
PRODUCT_NAMESPACE = uuid.UUID("9c3e3f7e-8f3b-4a55-9d8e-2b1f0c6a7d11")
BATCH = 200
# Bytes read but not yet uploaded: with 50 MB photos a batch of 200 must not be held whole.
MAX_BYTES_IN_FLIGHT = 256 * 1024 * 1024


class ImportRefused(PhotoSyncError):
    """The import cannot start: the product map is wrong (the message names file and line)."""


class Skipped(Exception):
    """A file the importer leaves out; the message is the reason an operator reads (it never
    quotes the file's content)."""


@dataclass
class ImportSummary:
    """What one import did: counts, bytes uploaded, the photos it wrote, the files it skipped."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    bytes: int = 0
    photos: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether the catalog (and so the stores' feed) changed."""
        return bool(self.created or self.updated)

    def as_dict(self) -> dict:
        """The summary as `import --json` prints it (without `photos`)."""
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged,
                "bytes": self.bytes, "changed": self.changed, "skipped": self.skipped}


@dataclass
class _Item:
    path: Path
    product_id: uuid.UUID
    is_primary: bool | None
    sort_order: int


def sniff_image(data: bytes) -> str | None:
    """The content type of image bytes by their magic number, or None when they are none of
    the types HO stores (JPEG, PNG, WebP, GIF)."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


NOT_AN_IMAGE = "not a JPEG, PNG, WebP or GIF image (checked by its bytes, not its name)"
SYMLINK = "a symbolic link (never followed: copy the file itself into the folder)"


def _check_size(size: int, max_bytes: int) -> None:
    if size == 0:
        raise Skipped("an empty file")
    if size > max_bytes:
        raise Skipped(f"{size} bytes, over the {max_bytes}-byte cap "
                    "(PHOTO_SYNC_HO_MAX_PHOTO_BYTES; stores refuse larger photos)")


def read_image(path: Path, max_bytes: int = MAX_PHOTO_BYTES,
               head_only: bool = False) -> tuple[bytes, str]:
    """(bytes, content type) of one regular image file; `Skipped` with the reason otherwise.

    Opened with O_NOFOLLOW and checked after opening, so what is read is the regular file
    that was checked, whatever was swapped in at the path meanwhile."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if os.path.islink(path):
            raise Skipped(SYMLINK) from None
        raise Skipped(f"cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise Skipped("not a regular file")
        _check_size(info.st_size, max_bytes)
        data = handle.read(16 if head_only else max_bytes + 1)
    if not head_only:
        _check_size(len(data), max_bytes)  # it grew or shrank since fstat
    content_type = sniff_image(data)
    if content_type is None:
        raise Skipped(NOT_AN_IMAGE)
    return data, content_type


def _check_name(name: str) -> None:
    """`Skipped` for a file name the catalog and the stores cannot carry as it is."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        # os.walk hands undecodable bytes over as surrogates; PostgreSQL and JSON take UTF-8.
        raise Skipped("the file name is not valid UTF-8 (written by a system with another "
                      "encoding?): rename it in UTF-8") from None
    if any(ord(char) < 0x20 or 0x7f <= ord(char) <= 0x9f for char in name):
        # A newline in the object key breaks the gateway's X-Accel-Redirect match: the store
        # was answered 404, took the photo for deleted at HO, and never reported it.
        raise Skipped("the file name holds a control character (newline, tab, ...): rename it")


def scan_directory(directory: Path, max_bytes: int = MAX_PHOTO_BYTES,
                   skipped: list[dict] | None = None) -> list[Path]:
    """The regular image files below `directory`, sorted; each other entry goes to `skipped`
    as {"path", "reason"}. Symbolic links, to files or to folders, are never followed."""
    skipped = [] if skipped is None else skipped
    found = []
    for root, dirnames, filenames in os.walk(directory, followlinks=False):
        here = Path(root)
        for name in sorted(dirnames):
            if (here / name).is_symlink():
                skipped.append({"path": str(here / name),
                                "reason": "a symbolic link to a folder (never followed)"})
        dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
        for name in sorted(filenames):
            path = here / name
            try:
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode):
                    raise Skipped(SYMLINK)
                if not stat.S_ISREG(info.st_mode):
                    raise Skipped("not a regular file")
                _check_name(name)
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    raise Skipped("not an image file name (" + ", ".join(sorted(IMAGE_SUFFIXES))
                                + ")")
                read_image(path, max_bytes, head_only=True)
            except Skipped as exc:
                skipped.append({"path": str(path), "reason": str(exc)})
                continue
            except OSError as exc:
                skipped.append({"path": str(path), "reason": f"cannot be read ({exc.strerror})"})
                continue
            found.append(path)
    return sorted(found)


def read_product_map(path: Path) -> dict[str, dict]:
    """CSV with a header: filename, product_id [, is_primary, sort_order]."""
    try:
        return _read_product_map(path)
    except OSError as exc:
        raise ConfigError(f"cannot read product map {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ImportRefused(f"{path}: not UTF-8 text; save the product map as UTF-8 CSV") \
            from None


def _read_product_map(path: Path) -> dict[str, dict]:
    mapping = {}
    primaries: dict[uuid.UUID, str] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"filename", "product_id"} <= set(reader.fieldnames):
            raise ImportRefused(f"{path}: needs a header with filename and product_id columns")
        for line, row in enumerate(reader, 2):
            try:
                product_id = uuid.UUID(row["product_id"])
            except (ValueError, TypeError):
                raise ImportRefused(f"{path}:{line}: product_id {row['product_id']!r} "
                                    "is not a UUID") from None
            primary = (row.get("is_primary") or "").strip().lower()
            if primary in ("1", "true", "yes"):
                # The catalog allows one primary photo per product.
                if product_id in primaries:
                    raise ImportRefused(f"{path}:{line}: product {product_id} already has "
                                        f"primary photo {primaries[product_id]}; mark one photo "
                                        "per product as primary")
                primaries[product_id] = row["filename"]
            try:
                sort_order = int(row["sort_order"]) if row.get("sort_order") else None
            except ValueError:
                raise ImportRefused(f"{path}:{line}: sort_order {row['sort_order']!r} is not "
                                    "a whole number") from None
            mapping[row["filename"]] = {
                "product_id": product_id,
                "is_primary": primary in ("1", "true", "yes") if primary else None,
                "sort_order": sort_order,
            }
    return mapping


def plan_items(directory: Path, product_map: dict[str, dict] | None = None,
               max_bytes: int = MAX_PHOTO_BYTES, skipped: list[dict] | None = None) -> list[_Item]:
    """Which product each image file belongs to, in a stable order (see `scan_directory`)."""
    files = scan_directory(directory, max_bytes, skipped)
    by_product: dict[uuid.UUID, list[Path]] = defaultdict(list)
    mapped: dict[Path, dict] = {}
    for path in files:
        rel = path.relative_to(directory).as_posix()
        entry = (product_map or {}).get(rel) or (product_map or {}).get(path.name)
        if entry:
            product_id = entry["product_id"]
            mapped[path] = entry
        else:
            try:
                product_id = uuid.UUID(path.parent.name)
            except ValueError:
                product_id = uuid.uuid5(PRODUCT_NAMESPACE, path.stem)
        by_product[product_id].append(path)
    items = []
    for product_id, paths in by_product.items():
        for index, path in enumerate(paths):
            entry = mapped.get(path, {})
            sort_order = entry.get("sort_order")
            items.append(_Item(path, product_id, entry.get("is_primary"),
                               index if sort_order is None else sort_order))
    return items


def import_directory(conn: psycopg.Connection, storage: Storage, directory: Path,
                     product_map: dict[str, dict] | None = None, workers: int = 8,
                     progress=None, max_bytes: int = MAX_PHOTO_BYTES) -> ImportSummary:
    """Import every image below `directory`; see the module docstring for the rules."""
    summary = ImportSummary()
    items = plan_items(directory, product_map, max_bytes, summary.skipped)
    stale_keys: list[str] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(items), BATCH):
            chunk = items[start:start + BATCH]
            uploads = []
            pending = []
            in_flight = 0
            for item in chunk:
                try:
                    data, content_type = read_image(item.path, max_bytes)
                except Skipped as exc:  # changed since the scan
                    summary.skipped.append({"path": str(item.path), "reason": str(exc)})
                    continue
                sums = Checksums.of(data)
                existing = catalog.find_photo(conn, item.product_id, item.path.name)
                if existing and (existing["checksum_sha256"] == sums.sha256 or (
                        existing["checksum_sha256"] is None and existing["checksum"] == sums.md5)):
                    summary.unchanged += 1
                    continue
                key = f"products/{item.product_id}/{sums.sha256[:16]}/{item.path.name}"
                if in_flight + sums.size > MAX_BYTES_IN_FLIGHT:
                    for future in uploads:
                        future.result()  # the finished uploads let go of their bytes
                    in_flight = 0
                uploads.append(pool.submit(storage.put, key, data, content_type))
                in_flight += sums.size
                del data
                pending.append((item, existing, key, sums, content_type))
            for future in uploads:
                future.result()  # an S3 failure stops the import before the catalog moves
            with conn.transaction():
                for item, existing, key, sums, content_type in pending:
                    if existing is None:
                        primary = item.is_primary
                        if primary is None:
                            primary = not catalog.product_has_primary(conn, item.product_id)
                        elif primary:
                            # The product map names a new primary: the old one steps down
                            # (one primary per product; the demotion reaches stores in the feed).
                            catalog.clear_primary(conn, item.product_id)
                        photo = {"id": uuid.uuid4(), "product_id": item.product_id,
                                 "object_key": key, "filename": item.path.name,
                                 "size": sums.size, "content_type": content_type,
                                 "checksum": sums.md5, "checksum_sha256": sums.sha256,
                                 "version": 1, "is_primary": primary,
                                 "sort_order": item.sort_order}
                        catalog.insert_photo(conn, photo)
                        summary.created += 1
                        summary.photos.append({"id": str(photo["id"]), "version": 1,
                                               "file": str(item.path)})
                    else:
                        version = catalog.update_photo_bytes(
                            conn, existing["id"], object_key=key, size=sums.size,
                            content_type=content_type, checksum=sums.md5,
                            checksum_sha256=sums.sha256)
                        summary.updated += 1
                        summary.photos.append({"id": str(existing["id"]), "version": version,
                                               "file": str(item.path)})
                        if existing["object_key"] != key:
                            stale_keys.append(existing["object_key"])
                    summary.bytes += sums.size
            if progress:
                progress(min(start + BATCH, len(items)), len(items))
    for key in stale_keys:
        storage.remove(key)
    return summary
