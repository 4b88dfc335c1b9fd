"""What the HO API and the edge agent share: paths, headers, statuses, checksums."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

API_PREFIX = "/api/v1"
# Signed download links (ho/links.py): served by the ho_gateway from S3, no API on the path.
SIGNED_PREFIX = "/signed/"

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

# Why one photo failed: the `kind` of a run summary's failure record, raised with the
# failure (the edge client's exceptions carry it as a class attribute) and counted by
# the metrics by kind, never by the words of the error.
FAILURE_CHECKSUM_MISMATCH = "checksum_mismatch"  # the bytes failed MD5/SHA-256 verification
FAILURE_TOO_LARGE = "too_large"  # past the listed size or PHOTO_SYNC_EDGE_MAX_PHOTO_BYTES
FAILURE_DEADLINE = "deadline"  # slower than PHOTO_SYNC_EDGE_MIN_RATE allows
FAILURE_REJECTED = "rejected"  # any other answer that cannot be stored
FAILURE_UNAVAILABLE = "unavailable"  # HO could not deliver the photo (5xx, broken bodies)
FAILURE_HTTP_ERROR = "http_error"  # HO refused the request for this photo (4xx)
FAILURE_INVALID = "invalid"  # the feed item did not validate (parse_photo)
FAILURE_KINDS = (FAILURE_CHECKSUM_MISMATCH, FAILURE_TOO_LARGE, FAILURE_DEADLINE,
                 FAILURE_REJECTED, FAILURE_UNAVAILABLE, FAILURE_HTTP_ERROR, FAILURE_INVALID)

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
# stop a run or reach the store's tables. Each field's bounds sit beside its edge
# column in PHOTO_FIELDS, so a value that passes always fits its column.

INT32_MAX = 2**31 - 1
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


# The photo's fields: one table for every place a field lives ----------------------------
#
# HO's catalog DDL, select lists and insert (photo_sync.ho.catalog), the API's photo JSON
# (ho.api.photo_json) and its OpenAPI schema (ho.openapi.PHOTO), the edge's check of a feed
# item (parse_photo below), the edge columns (edge.schema.COLUMNS), the edge's writes and
# reads (edge.store), its metadata comparison (edge.engine.META_FIELDS) and the store photo
# server's product JSON (edge.serve) are all read from PHOTO_FIELDS. Adding a field is one
# line here (docs/architecture.md, "Adding a feed field").

REQUIRED = object()  # PhotoField.missing: an item without the field fails
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _same(value):
    return value


def _iso(value):
    return value.isoformat()


def _str(value):
    return str(value)


@dataclass(frozen=True, eq=False)
class PhotoField:
    """One field of a photo in the feed and every place it lives.

    - `schema`: its OpenAPI schema; `required`: HO always sends it (OpenAPI `required`).
    - `parse(value, name)`: the edge's check and normalisation (ValueError naming the
      field); `missing`: the value the edge takes when an item lacks it (REQUIRED: the
      item fails).
    - `ho`: the HO catalog column's type and constraints (None: HO derives the value, see
      api.photo_json); `ho_column`: its name when not the field's; `ho_added`: added to an
      existing catalog by `ALTER TABLE ... ADD COLUMN IF NOT EXISTS` (every new field is;
      False only for the original design's columns, made by CREATE TABLE); `to_json`: the
      column's value as JSON.
    - `edge`: the edge column's type and default (None: the edge keeps no column);
      `of_bytes`: it describes the bytes (taken from the verified download, NULL on a
      photo new to the store that failed); `meta`: a change rewrites the edge row's
      metadata (edge.engine.META_FIELDS); `serve`: in the store photo server's product JSON,
      converted by this function (None: not served).
    """

    name: str
    schema: dict
    parse: Callable
    required: bool = True
    missing: object = REQUIRED
    ho: str | None = None
    ho_column: str | None = None
    ho_added: bool = True
    to_json: Callable = _same
    edge: str | None = None
    of_bytes: bool = False
    meta: bool = True
    serve: Callable | None = None

    def __post_init__(self):
        # Names go into DDL text: plain identifiers only.
        for name in (self.name, self.ho_column or self.name):
            if not _IDENTIFIER.match(name):
                raise ValueError(f"photo field {name!r} is not a plain lower-case identifier")

    @property
    def column(self) -> str:
        """The HO catalog column that holds the field."""
        return self.ho_column or self.name


def _text_of(limit: int, *, empty: bool = True, optional: bool = False) -> Callable:
    return lambda value, name: _text(value, name, limit, empty=empty, optional=optional)


def _int_of(low: int) -> Callable:
    return lambda value, name: _int(value, name, low)


def _signed_path(value, name):
    value = _text(value, name, URL_MAX, optional=True)
    if value is not None and not value.startswith(SIGNED_PREFIX):
        raise ValueError(f"{name} must be a path under {SIGNED_PREFIX}, not {_short(value)}")
    return value


def _optional_int(value, name):
    return None if value is None else _int(value, name, 0, 2**63 - 1)


def _md5(value, name):
    return _hex(value, name, 32, lower_only=True)


def _sha256(value, name):
    return None if value is None else _hex(value, name, 64, lower_only=False)


def _is_deleted(deleted_at) -> bool:
    return deleted_at is not None


_UUID = {"type": "string", "format": "uuid"}

PHOTO_FIELDS: tuple[PhotoField, ...] = (
    PhotoField("id", _UUID, _uuid, ho="uuid PRIMARY KEY", ho_added=False, to_json=_str,
               edge="uuid", meta=False, serve=_str),
    PhotoField("product_id", _UUID, _uuid, ho="uuid NOT NULL", ho_added=False, to_json=_str,
               edge="uuid"),
    PhotoField("object_key", {"type": "string"}, _text_of(1024, empty=False),
               ho="varchar(1024) NOT NULL", ho_added=False, edge="varchar(1024)"),
    PhotoField("filename", {"type": "string"}, _text_of(255), ho="varchar(255) NOT NULL",
               ho_added=False, edge="varchar(255)", serve=_same),
    PhotoField("size", {"type": "integer", "minimum": 0}, _int_of(0), ho="integer NOT NULL",
               ho_added=False, edge="integer", of_bytes=True, serve=_same),
    PhotoField("content_type", {"type": "string"}, _text_of(100), ho="varchar(100) NOT NULL",
               ho_added=False, edge="varchar(100)", serve=_same),
    PhotoField("checksum", {"type": "string", "description": "MD5 hex of the bytes"}, _md5,
               ho="varchar(64) NOT NULL", ho_added=False, edge="varchar(64)", of_bytes=True,
               meta=False),
    PhotoField("checksum_sha256", {"type": "string", "nullable": True}, _sha256,
               required=False, missing=None, ho="varchar(64)"),
    PhotoField("version", {"type": "integer", "minimum": 1}, _int_of(1),
               ho="integer NOT NULL DEFAULT 1", ho_added=False, edge="integer", of_bytes=True),
    PhotoField("is_primary", {"type": "boolean"}, _bool, ho="boolean NOT NULL DEFAULT false",
               ho_added=False, edge="boolean DEFAULT false", serve=bool),
    PhotoField("sort_order", {"type": "integer"}, _int_of(-INT32_MAX - 1),
               ho="integer NOT NULL DEFAULT 0", ho_added=False, edge="integer DEFAULT 0",
               serve=_same),
    PhotoField("updated_at", {"type": "string", "format": "date-time"}, _datetime,
               ho="timestamptz NOT NULL DEFAULT now()", ho_added=False, to_json=_iso,
               edge="timestamptz"),
    PhotoField("image_url", {"type": "string",
                             "description": "HO URL with ?v=<first 8 hex of checksum>"},
               _text_of(URL_MAX, optional=True), missing=None),
    # Only tombstones carry `deleted` in the original design.
    PhotoField("deleted", {"type": "boolean", "description": "a tombstone: delete this photo"},
               _bool, missing=False, ho="timestamptz", ho_column="deleted_at",
               to_json=_is_deleted),
    PhotoField("download_url", {"type": "string", "description": "when HO offers it: a "
                                "short-lived S3 URL for the bytes, bypassing the API; verify "
                                "against checksum and checksum_sha256"},
               _text_of(URL_MAX, optional=True), required=False, missing=None),
    PhotoField("signed_url", {"type": "string", "description": "when HO offers it (behind "
                              "the ho_gateway): a path on HO's own origin, under /signed/, "
                              "that the gateway serves from S3 without the API until "
                              "signed_url_expires; verify against checksum and "
                              "checksum_sha256. Expired (410) or refused (403): list the "
                              "page again, or download through the API"},
               _signed_path, required=False, missing=None),
    PhotoField("signed_url_expires", {"type": "integer", "description": "when signed_url "
                                      "stops working, in seconds since 1970 (UTC)"},
               _optional_int, required=False, missing=None),
)

# Listing fields that stop working after a while: never kept for a later run's retry.
SHORT_LIVED_FIELDS = frozenset({"download_url", "signed_url", "signed_url_expires"})


def ho_fields() -> list[PhotoField]:
    """The fields HO keeps in catalog columns."""
    return [f for f in PHOTO_FIELDS if f.ho is not None]


def edge_fields() -> list[PhotoField]:
    """The fields the edge keeps in columns of its photo table, in column order."""
    return [f for f in PHOTO_FIELDS if f.edge is not None]


def edge_meta_fields() -> list[PhotoField]:
    """The edge columns whose change rewrites a held row's metadata (its bytes kept)."""
    return [f for f in edge_fields() if f.meta]


def parse_photo(item) -> dict:
    """A feed item checked and normalised (UUIDs, an aware `updated_at`, bounded ints and
    strings), one entry per PHOTO_FIELDS; InvalidPhoto naming the first field that is
    wrong."""
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
        missing = [f.name for f in PHOTO_FIELDS
                   if f.missing is REQUIRED and f.name != "id" and f.name not in item]
        if missing:
            raise ValueError(f"{', '.join(missing)} missing")
        photo = {field.name: photo_id if field.name == "id" else
                 field.parse(item.get(field.name, field.missing), field.name)
                 for field in PHOTO_FIELDS}
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
