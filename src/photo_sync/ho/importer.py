"""Bring image files into HO: bytes to S3, metadata and checksums to the catalog.

A new photo gets version 1; changed bytes get version + 1; the same bytes
change nothing. Object keys carry the content hash, so the catalog never
points at bytes other than the ones its checksum describes, even while an
import overwrites a photo that stores are downloading.
"""

from __future__ import annotations

import csv
import mimetypes
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from photo_sync.protocol import Checksums
from photo_sync.ho import catalog
from photo_sync.ho.storage import Storage

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}
# Stable product ids for files without a product map: the same name, the same product.
PRODUCT_NAMESPACE = uuid.UUID("9c3e3f7e-8f3b-4a55-9d8e-2b1f0c6a7d11")
BATCH = 200


@dataclass
class ImportSummary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    bytes: int = 0
    photos: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged,
                "bytes": self.bytes}


@dataclass
class _Item:
    path: Path
    product_id: uuid.UUID
    is_primary: bool | None
    sort_order: int


def content_type_for(path: Path, data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def read_product_map(path: Path) -> dict[str, dict]:
    """CSV with a header: filename, product_id [, is_primary, sort_order]."""
    mapping = {}
    primaries: dict[uuid.UUID, str] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"filename", "product_id"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs a header with filename and product_id columns")
        for line, row in enumerate(reader, 2):
            try:
                product_id = uuid.UUID(row["product_id"])
            except (ValueError, TypeError):
                raise ValueError(f"{path}:{line}: product_id {row['product_id']!r} "
                                 "is not a UUID") from None
            primary = (row.get("is_primary") or "").strip().lower()
            if primary in ("1", "true", "yes"):
                # The catalog allows one primary photo per product.
                if product_id in primaries:
                    raise ValueError(f"{path}:{line}: product {product_id} already has primary "
                                     f"photo {primaries[product_id]}; mark one photo per "
                                     "product as primary")
                primaries[product_id] = row["filename"]
            mapping[row["filename"]] = {
                "product_id": product_id,
                "is_primary": primary in ("1", "true", "yes") if primary else None,
                "sort_order": int(row["sort_order"]) if row.get("sort_order") else None,
            }
    return mapping


def plan_items(directory: Path, product_map: dict[str, dict] | None = None) -> list[_Item]:
    """Which product each image file belongs to, in a stable order."""
    files = sorted(p for p in directory.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
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
                     progress=None) -> ImportSummary:
    """Import every image below `directory`; see the module docstring for the rules."""
    items = plan_items(directory, product_map)
    summary = ImportSummary()
    stale_keys: list[str] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(items), BATCH):
            chunk = items[start:start + BATCH]
            uploads = []
            pending = []
            for item in chunk:
                data = item.path.read_bytes()
                sums = Checksums.of(data)
                existing = catalog.find_photo(conn, item.product_id, item.path.name)
                if existing and (existing["checksum_sha256"] == sums.sha256 or (
                        existing["checksum_sha256"] is None and existing["checksum"] == sums.md5)):
                    summary.unchanged += 1
                    continue
                content_type = content_type_for(item.path, data)
                key = f"products/{item.product_id}/{sums.sha256[:16]}/{item.path.name}"
                uploads.append(pool.submit(storage.put, key, data, content_type))
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
