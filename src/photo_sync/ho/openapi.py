"""The machine-readable contract of the sync API (OpenAPI 3.0)."""

from __future__ import annotations

from photo_sync import __version__, protocol

_ERROR = {"description": "error", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/Error"}}}}


def _errors(*codes: int) -> dict:
    """The JSON error response for each status code."""
    return {str(code): _ERROR for code in codes}


def _param(name: str, where: str, schema: dict, description: str, required=False) -> dict:
    """One OpenAPI parameter object."""
    return {"name": name, "in": where, "required": required, "schema": schema,
            "description": description}


STORE_ID = _param("store_id", "query", {"type": "string", "format": "uuid"},
                  "the calling store; must match the token (absent: the token's store)")

_HEX32 = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
DOWNLOAD_HEADERS = {
    "X-Checksum": {"required": True, "description": "MD5 hex of the bytes", "schema": _HEX32},
    "X-Checksum-SHA256": {"description": "SHA-256 hex of the bytes",
                          "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
    "X-Version": {"required": True, "description": "the photo's version",
                  "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"}},
    "ETag": {"required": True, "description": "the quoted MD5 hex; send it as If-None-Match",
             "schema": {"type": "string", "pattern": '^"[0-9a-f]{32}"$'}},
}

# From the field table: a field's schema is written once, in protocol.PHOTO_FIELDS.
PHOTO = {
    "type": "object",
    "required": [field.name for field in protocol.PHOTO_FIELDS if field.required],
    "properties": {field.name: field.schema for field in protocol.PHOTO_FIELDS},
}


def spec(server_url: str = "") -> dict:
    """The OpenAPI 3.0 document of the v1 API, served at /api/v1/openapi.json."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "photo-sync HO sync API", "version": __version__,
                 "description": "Product photos from head office to the stores."},
        "servers": [{"url": server_url or "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "detail"],
                          "properties": {"error": {"type": "string"},
                                         "detail": {"type": "string"}}},
                "Photo": PHOTO,
            },
        },
        "paths": {
            f"{protocol.API_PREFIX}/auth/token/": {"post": {
                "summary": "Exchange store credentials for a bearer token",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["store_id", "secret"],
                    "properties": {"store_id": {"type": "string", "format": "uuid"},
                                   "secret": {"type": "string", "minLength": 1,
                                              "maxLength": 512}}}}}},
                "responses": {
                    "200": {"description": "a token", "content": {"application/json": {
                        "schema": {"type": "object",
                                   "required": ["access", "token_type", "expires_in"],
                                   "properties": {"access": {"type": "string"},
                                                  "token_type": {"type": "string"},
                                                  "expires_in": {"type": "integer"}}}}}},
                    # 429: too many failed attempts for this store id or from this address.
                    **_errors(400, 401, 413, 429, 503)},
            }},
            f"{protocol.API_PREFIX}/sync/product-photos/": {"get": {
                "summary": "A page of photos in change order",
                "security": [{"bearer": []}],
                "parameters": [
                    STORE_ID,
                    _param("limit", "query", {"type": "integer", "minimum": 1,
                                              "maximum": protocol.LIST_LIMIT_MAX,
                                              "default": protocol.LIST_LIMIT_DEFAULT},
                           "page size"),
                    _param("offset", "query", {"type": "integer", "minimum": 0, "default": 0},
                           "legacy offset paging (may skip rows while the catalog changes)"),
                    _param("since", "query", {"type": "string", "format": "date-time"},
                           "legacy: photos changed at or after this time, tombstones included"),
                    _param("cursor", "query", {"type": "string"},
                           "the change feed after a previous page's next_cursor; cannot skip "
                           "a change; excludes offset and since"),
                ],
                "responses": {
                    "200": {"description": "a page", "content": {"application/json": {"schema": {
                        "type": "object",
                        "required": ["photos", "total", "has_more", "next_offset", "next_cursor"],
                        "properties": {
                            "photos": {"type": "array",
                                       "items": {"$ref": "#/components/schemas/Photo"}},
                            "total": {"type": "integer"},
                            "has_more": {"type": "boolean"},
                            "next_offset": {"type": "integer", "nullable": True},
                            "next_cursor": {"type": "string"},
                            # Optional: an agent whose cursor is beyond head_cursor, or from
                            # another epoch, re-lists the catalog (HO restored from a backup).
                            "head_cursor": {"type": "string", "nullable": True},
                            "epoch": {"type": "string", "nullable": True}}}}}},
                    **_errors(400, 401, 403, 503)},
            }},
            f"{protocol.API_PREFIX}/sync/product-photos/{{photo_id}}/download/": {"get": {
                "summary": "The bytes of one photo, streamed",
                "security": [{"bearer": []}],
                "parameters": [
                    _param("photo_id", "path", {"type": "string", "format": "uuid"},
                           "the photo", required=True),
                    STORE_ID,
                    _param("If-None-Match", "header", {"type": "string"},
                           "an ETag held; 304 when it is current"),
                ],
                "responses": {
                    # The photo's own type (image/jpeg, image/png, ...), as in content_type.
                    "200": {"description": "the bytes; X-Checksum (MD5 hex), X-Checksum-SHA256, "
                                           "X-Version, ETag",
                            "headers": DOWNLOAD_HEADERS,
                            "content": {media: {"schema": {"type": "string", "format": "binary"}}
                                        for media in ("image/*", "application/octet-stream")}},
                    "304": {"description": "the ETag given is current",
                            "headers": DOWNLOAD_HEADERS},
                    **_errors(400, 401, 403, 404, 429, 503)},
            }},
            f"{protocol.API_PREFIX}/sync/product-photos/status/": {"post": {
                "summary": "Record the calling store's per-photo sync statuses",
                "security": [{"bearer": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["sync_batch"],
                    "properties": {
                        "store_id": {"type": "string", "format": "uuid"},
                        "sync_batch": {"type": "array", "maxItems": protocol.REPORT_BATCH_MAX,
                                       "items": {"type": "object",
                                                 "required": ["photo_id", "status"],
                                                 "properties": {
                            "photo_id": {"type": "string", "format": "uuid"},
                            "status": {"type": "string", "enum": list(protocol.REPORT_STATUSES)},
                            "synced_at": {"type": "string", "format": "date-time",
                                          "nullable": True},
                            "error": {"type": "string", "nullable": True},
                            "version": {"type": "integer", "minimum": 0}}}}}}}}},
                "responses": {
                    "200": {"description": "recorded; items about photos the catalog never "
                                           "had are ignored and counted",
                            "content": {"application/json": {"schema": {
                                "type": "object", "required": ["message", "count", "ignored"],
                                "properties": {"message": {"type": "string"},
                                               "count": {"type": "integer", "minimum": 0},
                                               "ignored": {"type": "integer", "minimum": 0}}}}}},
                    **_errors(400, 401, 403, 413, 503)},
            }},
            f"{protocol.API_PREFIX}/health/": {"get": {
                "summary": "Liveness and readiness of catalog and storage",
                "responses": {
                    "200": {"description": "all up", "content": {"application/json": {
                        "schema": {"type": "object"}}}},
                    "503": {"description": "catalog or storage down", "content": {
                        "application/json": {"schema": {"type": "object"}}}}},
            }},
            f"{protocol.API_PREFIX}/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.0",
                                      "content": {"application/json": {
                                          "schema": {"type": "object"}}}}},
            }},
        },
    }
