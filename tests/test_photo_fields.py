"""One table for the photo's fields (protocol.PHOTO_FIELDS): every place a field lives reads
it, so a field added there reaches HO's catalog and API, the OpenAPI document, the edge's
check of a feed item, the edge columns and writes, and the store photo server. Nothing
here needs a service."""

from __future__ import annotations

import datetime as dt
import uuid

from support.hostile_ho import HostileHO
from photo_sync import protocol
from photo_sync.edge import engine, schema
from photo_sync.ho import catalog, openapi

NAMES = [f.name for f in protocol.PHOTO_FIELDS]


def test_the_openapi_photo_schema_is_the_table():
    assert list(openapi.PHOTO["properties"]) == NAMES
    assert openapi.PHOTO["required"] == [f.name for f in protocol.PHOTO_FIELDS if f.required]


def test_the_ho_catalog_columns_are_the_table():
    columns = [f.column for f in protocol.PHOTO_FIELDS if f.ho]
    assert list(catalog.PHOTO_COLUMN_NAMES) == columns + ["change_seq"]
    ddl = "\n".join(step for step in catalog.DDL if isinstance(step, str))
    for field in protocol.PHOTO_FIELDS:
        if field.ho:
            assert f"{field.column} {field.ho}" in ddl, field.name


def test_the_edge_columns_and_metadata_are_the_table():
    edge = [(f.name, f.edge) for f in protocol.PHOTO_FIELDS if f.edge]
    assert schema.COLUMNS[:len(edge)] == edge
    assert list(engine.META_FIELDS) == [f.name for f in protocol.PHOTO_FIELDS
                                        if f.edge and f.meta]


def test_parse_photo_returns_every_field_and_names_a_missing_one():
    item = {"id": str(uuid.uuid4()), "product_id": str(uuid.uuid4()), "object_key": "a/b.jpg",
            "filename": "b.jpg", "size": 3, "content_type": "image/jpeg",
            "checksum": "0" * 32, "version": 1, "is_primary": False, "sort_order": 0,
            "updated_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).isoformat()}
    assert list(protocol.parse_photo(item)) == NAMES
    required = [f.name for f in protocol.PHOTO_FIELDS
                if f.missing is protocol.REQUIRED and f.name != "id"]
    for name in required:
        broken = {k: v for k, v in item.items() if k != name}
        try:
            protocol.parse_photo(broken)
        except protocol.InvalidPhoto as exc:
            assert f"{name} missing" in str(exc)
        else:
            raise AssertionError(f"an item without {name} was accepted")


def test_the_hostile_ho_sends_what_the_real_ho_sends():
    """The test double lists every field HO always sends, and the SHA-256 HO keeps."""
    ho = HostileHO()
    try:
        item = ho.add_photo(size=10)
    finally:
        ho.server.server_close()
    assert set(item) == set(openapi.PHOTO["required"]) | {"checksum_sha256"}
