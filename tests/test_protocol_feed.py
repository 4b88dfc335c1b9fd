"""protocol.parse_photo / parse_page: every field HO sends, checked at one place."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from photo_sync import protocol

GOOD = {
    "id": "0b6f1f0e-8f6a-4c51-9d59-0d3d2b3f3c11",
    "product_id": "5d8f2c1a-1b2c-4d3e-8f9a-0a1b2c3d4e5f",
    "object_key": "products/5d8f/photo-1.jpg",
    "filename": "photo-1.jpg",
    "size": 31337,
    "content_type": "image/jpeg",
    "checksum": "0123456789abcdef0123456789abcdef",
    "checksum_sha256": "AB" * 32,
    "version": 3,
    "is_primary": True,
    "sort_order": 0,
    "updated_at": "2026-12-02T04:00:00.123456+00:00",
    "image_url": "http://ho/p.jpg?v=01234567",
    "deleted": False,
}


def test_a_good_item_is_normalised():
    photo = protocol.parse_photo(GOOD)
    assert photo["id"] == uuid.UUID(GOOD["id"]) and isinstance(photo["product_id"], uuid.UUID)
    assert photo["updated_at"] == dt.datetime(2026, 12, 2, 4, 0, 0, 123456, dt.timezone.utc)
    assert photo["checksum_sha256"] == "ab" * 32 and photo["download_url"] is None
    assert protocol.parse_photo(protocol.dump_photo(photo)) == photo
    tombstone = {k: v for k, v in GOOD.items() if k != "deleted"}
    assert protocol.parse_photo(tombstone)["deleted"] is False


@pytest.mark.parametrize("field, value, words", [
    ("updated_at", "2026-13-45T99:00:00+00:00", "updated_at is not an ISO 8601"),
    ("updated_at", "2026-12-02T04:00:00", "updated_at has no time zone"),
    ("updated_at", 1733112000, "updated_at must be an ISO 8601"),
    ("deleted", "false", "deleted must be a JSON boolean"),
    ("is_primary", 1, "is_primary must be a JSON boolean"),
    ("size", True, "size must be an integer"),
    ("size", -1, "size -1 is outside"),
    ("size", 2**31, "is outside"),
    ("version", 0, "version 0 is outside"),
    ("sort_order", 1.5, "sort_order must be an integer"),
    ("checksum", "0123456789ABCDEF0123456789ABCDEF", "lower-case hex"),
    ("checksum", "abc", "checksum must be 32 hex digits"),
    ("checksum_sha256", "zz" * 32, "checksum_sha256 must be 64 lower-case hex"),
    ("filename", "x" * 256, "filename is 256 characters long, more than 255"),
    ("object_key", "", "object_key is empty"),
    ("content_type", ["image/jpeg"], "content_type must be a string"),
    ("filename", "a\x00b", "NUL"),
    ("product_id", "not-a-uuid", "product_id must be a UUID"),
    ("download_url", "x" * 9000, "download_url is 9000 characters long"),
])
def test_a_bad_field_is_named_and_the_id_kept(field, value, words):
    with pytest.raises(protocol.InvalidPhoto) as info:
        protocol.parse_photo({**GOOD, field: value})
    assert words in str(info.value) and GOOD["id"] in str(info.value)
    assert info.value.photo_id == uuid.UUID(GOOD["id"])
    assert info.value.version == (None if field == "version" else 3)


def test_a_missing_field_is_named():
    with pytest.raises(protocol.InvalidPhoto, match="filename, size missing"):
        protocol.parse_photo({k: v for k, v in GOOD.items() if k not in ("filename", "size")})


@pytest.mark.parametrize("item", [{**GOOD, "id": "x" * 10_000}, {**GOOD, "id": 7}, "photo",
                                  None, ["a"]])
def test_an_item_without_a_usable_id_has_a_short_name(item):
    with pytest.raises(protocol.InvalidPhoto) as info:
        protocol.parse_photo(item)
    assert info.value.photo_id is None
    assert len(info.value.raw_id) <= 40 and len(str(info.value)) < 200


@pytest.mark.parametrize("body, words", [
    ([], "the page is a JSON list"),
    ({"photos": None, "has_more": False}, "photos must be a list"),
    ({"photos": [], "has_more": "no"}, "has_more must be a JSON boolean"),
    ({"photos": [], "has_more": True, "next_cursor": None}, "next_cursor is missing"),
    ({"photos": [], "has_more": False, "next_cursor": 5}, "next_cursor must be a string"),
    ({"photos": [], "has_more": False, "total": -3}, "total -3 is outside"),
])
def test_a_bad_envelope_is_refused(body, words):
    with pytest.raises(protocol.InvalidPage, match=words):
        protocol.parse_page(body)


def test_a_good_envelope_keeps_raw_items_for_parse_photo():
    page = protocol.parse_page({"photos": [GOOD, "junk"], "has_more": True, "next_cursor": "c",
                                "total": 2, "next_offset": None, "extra": 1})
    assert page == {"photos": [GOOD, "junk"], "has_more": True, "next_cursor": "c",
                    "total": 2, "next_offset": None}
