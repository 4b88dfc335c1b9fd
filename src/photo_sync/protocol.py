"""What the HO API and the edge agent share: paths, headers, statuses, checksums."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import uuid

API_PREFIX = "/api/v1"

HEADER_CHECKSUM = "X-Checksum"  # MD5 hex, as in the original design
HEADER_CHECKSUM_SHA256 = "X-Checksum-SHA256"
HEADER_VERSION = "X-Version"

# sync_status values on the edge, and the statuses a store may report to HO.
STATUS_PENDING = "pending"
STATUS_SYNCING = "syncing"
STATUS_SYNCED = "synced"
STATUS_FAILED = "failed"
STATUS_DELETED = "deleted"
EDGE_STATUSES = (STATUS_PENDING, STATUS_SYNCING, STATUS_SYNCED, STATUS_FAILED)
REPORT_STATUSES = EDGE_STATUSES + (STATUS_DELETED,)

LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 500
REPORT_BATCH_MAX = 1000

_CURSOR_PREFIX = "c1:"


class Checksums:
    """MD5 and SHA-256 of a byte stream, fed chunk by chunk."""

    __slots__ = ("_md5", "_sha256", "size")

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        """Feed the next chunk of the stream."""
        self._md5.update(chunk)
        self._sha256.update(chunk)
        self.size += len(chunk)

    @property
    def md5(self) -> str:
        """MD5 of what was fed, lowercase hex."""
        return self._md5.hexdigest()

    @property
    def sha256(self) -> str:
        """SHA-256 of what was fed, lowercase hex."""
        return self._sha256.hexdigest()

    @classmethod
    def of(cls, data: bytes) -> "Checksums":
        """The checksums of `data` in one go."""
        sums = cls()
        sums.update(data)
        return sums


def cache_buster(checksum: str) -> str:
    """The `v=` value of an image URL: the first 8 hex digits of the checksum."""
    return checksum[:8]


def encode_cursor(change_seq: int) -> str:
    """An opaque cursor for the change feed, positioned after `change_seq`."""
    raw = f"{_CURSOR_PREFIX}{int(change_seq)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The change sequence a cursor stands after; ValueError when it is not a cursor."""
    if not cursor or len(cursor) > 64:
        raise ValueError("cursor is empty or too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("cursor is not base64") from exc
    if not raw.startswith(_CURSOR_PREFIX) or not raw[len(_CURSOR_PREFIX):].isdigit():
        raise ValueError("cursor is not a photo-sync cursor")
    seq = int(raw[len(_CURSOR_PREFIX):])
    if seq > 2**63 - 1:
        raise ValueError("cursor is out of range")
    return seq


def parse_uuid(value: str) -> uuid.UUID:
    """A UUID from text; ValueError for anything else."""
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("not a UUID")
    return uuid.UUID(value)


# The feed, as the edge reads it ------------------------------------------------------
#
# Everything HO sends about a photo is checked here, once, before the edge plans or
# writes anything: a damaged or hostile item must fail alone (InvalidPhoto), never
# stop a run or reach the store's tables. Bounds follow the edge schema's columns
# (photo_sync.edge.schema.COLUMNS), so a value that passes always fits its column.

INT32_MAX = 2**31 - 1
TEXT_LIMITS = {"object_key": 1024, "filename": 255, "content_type": 100}
URL_MAX = 8192  # presigned S3 URLs run to ~1-2 KB
DATETIME_MAX = 64
_HEX = frozenset("0123456789abcdef")


class InvalidPhoto(ValueError):
    """A feed item that does not validate. The message names the field; `photo_id` is the
    item's id (a UUID) when that much was valid, else None and `raw_id` is a short repr."""

    def __init__(self, message: str, photo_id: uuid.UUID | None = None, raw_id: str = "",
                 version: int | None = None):
        super().__init__(message)
        self.photo_id = photo_id
        self.raw_id = raw_id
        self.version = version  # the item's version when that field was valid


class InvalidPage(ValueError):
    """A feed page whose envelope (photos, has_more, next_cursor, ...) does not validate."""


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _int(value, field: str, low: int, high: int = INT32_MAX) -> int:
    # bool is an int in Python, not in JSON: `true` is not a size.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field} must be an integer, not {_short(value)}")
    if not low <= value <= high:
        raise ValueError(f"{field} {value} is outside {low}..{high}")
    return value


def _bool(value, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{field} must be a JSON boolean, not {_short(value)}")
    return value


def _text(value, field: str, limit: int, *, optional: bool = False, empty: bool = True):
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string, not {_short(value)}")
    if len(value) > limit:
        raise ValueError(f"{field} is {len(value)} characters long, more than {limit}")
    if not value and not empty:
        raise ValueError(f"{field} is empty")
    if "\x00" in value:  # PostgreSQL text cannot hold NUL
        raise ValueError(f"{field} contains a NUL character")
    return value


def _hex(value, field: str, length: int, *, lower_only: bool) -> str:
    if not isinstance(value, str) or len(value) != length:
        raise ValueError(f"{field} must be {length} hex digits, not {_short(value)}")
    normal = value if lower_only else value.lower()
    if not set(normal) <= _HEX:
        raise ValueError(f"{field} must be {length} lower-case hex digits, not {_short(value)}")
    return normal


def _uuid(value, field: str) -> uuid.UUID:
    try:
        return parse_uuid(value)
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"{field} must be a UUID, not {_short(value)}") from None


def _datetime(value, field: str) -> dt.datetime:
    if not isinstance(value, str) or len(value) > DATETIME_MAX:
        raise ValueError(f"{field} must be an ISO 8601 date-time, not {_short(value)}")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{field} is not an ISO 8601 date-time: {_short(value)}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{field} has no time zone: {_short(value)}")
    return parsed


_REQUIRED = ("product_id", "object_key", "filename", "size", "content_type", "checksum",
             "version", "is_primary", "sort_order", "updated_at")


def parse_photo(item) -> dict:
    """A feed item checked and normalised (UUIDs, an aware `updated_at`, bounded ints and
    strings); InvalidPhoto naming the first field that is wrong."""
    if not isinstance(item, dict):
        raise InvalidPhoto(f"feed item is a JSON {type(item).__name__}, not an object",
                           raw_id=_short(item))
    raw_id = item.get("id")
    try:
        photo_id = _uuid(raw_id, "id")
    except ValueError as exc:
        raise InvalidPhoto(f"feed item {_short(raw_id)}: {exc}", raw_id=_short(raw_id)) from None
    version = item.get("version")
    version = version if isinstance(version, int) and not isinstance(version, bool) and (
        1 <= version <= INT32_MAX) else None
    try:
        missing = [name for name in _REQUIRED if name not in item]
        if missing:
            raise ValueError(f"{', '.join(missing)} missing")
        photo = {
            "id": photo_id,
            "product_id": _uuid(item["product_id"], "product_id"),
            "object_key": _text(item["object_key"], "object_key", TEXT_LIMITS["object_key"],
                                empty=False),
            "filename": _text(item["filename"], "filename", TEXT_LIMITS["filename"]),
            "size": _int(item["size"], "size", 0),
            "content_type": _text(item["content_type"], "content_type",
                                  TEXT_LIMITS["content_type"]),
            "checksum": _hex(item["checksum"], "checksum", 32, lower_only=True),
            "checksum_sha256": (None if item.get("checksum_sha256") is None else
                                _hex(item["checksum_sha256"], "checksum_sha256", 64,
                                     lower_only=False)),
            "version": _int(item["version"], "version", 1),
            "is_primary": _bool(item["is_primary"], "is_primary"),
            "sort_order": _int(item["sort_order"], "sort_order", -INT32_MAX - 1),
            "updated_at": _datetime(item["updated_at"], "updated_at"),
            "image_url": _text(item.get("image_url"), "image_url", URL_MAX, optional=True),
            "download_url": _text(item.get("download_url"), "download_url", URL_MAX,
                                  optional=True),
            # Only tombstones carry `deleted` in the original design.
            "deleted": _bool(item.get("deleted", False), "deleted"),
        }
    except ValueError as exc:
        raise InvalidPhoto(f"feed item {photo_id}: {exc}", photo_id, str(photo_id),
                           version) from None
    return photo


def dump_photo(photo: dict) -> dict:
    """A parsed feed item back in its JSON form (for the edge's retry table)."""
    out = {}
    for name, value in photo.items():
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, dt.datetime):
            value = value.isoformat()
        out[name] = value
    return out


def parse_page(body) -> dict:
    """A feed page's envelope checked: `photos` (raw items, each for parse_photo), `has_more`,
    `next_cursor`, `total`, `next_offset`, and `head_cursor` and `epoch` when HO sent them
    (older HOs do not); InvalidPage naming what is wrong."""
    if not isinstance(body, dict):
        raise InvalidPage(f"the page is a JSON {type(body).__name__}, not an object")
    photos = body.get("photos")
    if not isinstance(photos, list):
        raise InvalidPage(f"photos must be a list, not {_short(photos)}")
    try:
        has_more = _bool(body.get("has_more"), "has_more")
        next_cursor = _text(body.get("next_cursor"), "next_cursor", 64, optional=True,
                            empty=False)
        total = body.get("total")
        total = None if total is None else _int(total, "total", 0, 2**63 - 1)
        next_offset = body.get("next_offset")
        next_offset = None if next_offset is None else _int(next_offset, "next_offset", 0,
                                                            2**63 - 1)
        head_cursor = _text(body.get("head_cursor"), "head_cursor", 64, optional=True,
                            empty=False)
        epoch = _text(body.get("epoch"), "epoch", 200, optional=True, empty=False)
    except ValueError as exc:
        raise InvalidPage(str(exc)) from None
    if has_more and next_cursor is None:
        raise InvalidPage("has_more is true but next_cursor is missing")
    page = {"photos": photos, "has_more": has_more, "next_cursor": next_cursor,
            "total": total, "next_offset": next_offset}
    for name, value in (("head_cursor", head_cursor), ("epoch", epoch)):
        if value is not None:
            page[name] = value
    return page
