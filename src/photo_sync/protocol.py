"""What the HO API and the edge agent share: paths, headers, statuses, checksums."""

from __future__ import annotations

import base64
import binascii
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
        self._md5.update(chunk)
        self._sha256.update(chunk)
        self.size += len(chunk)

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @classmethod
    def of(cls, data: bytes) -> "Checksums":
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
