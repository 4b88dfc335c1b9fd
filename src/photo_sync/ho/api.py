"""The sync API, v1: token, photo feed, download, status reports, health, OpenAPI."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid

import psycopg
from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from photo_sync import protocol
from photo_sync.ho import auth, catalog, links, metrics
from photo_sync.ho.errors import APIError
from photo_sync.ho.openapi import spec
from photo_sync.ho.storage import ObjectMissing, StorageUnavailable

__all__ = ["bp", "json_body", "parse_datetime", "photo_json"]

bp = Blueprint("api_v1", __name__, url_prefix=protocol.API_PREFIX)
log = logging.getLogger(__name__)

MAX_OFFSET = 10**9
# The presigned URL in an X-Accel-Redirect goes only to nginx, which uses it within
# milliseconds; minutes rather than seconds so clock skew between API hosts and S3 is no
# outage.
ACCEL_PRESIGN_TTL = 300
MAX_ERROR_TEXT = 4000


def _ext():
    """This worker's PhotoSyncExtension: settings, catalog pool, storage."""
    return current_app.extensions["photo_sync"]


def _bad(code: str, detail: str) -> APIError:
    return APIError(400, code, detail)


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    # isascii: str.isdigit() also accepts digits such as '²' that int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise _bad(f"invalid_{name}", f"{name} must be a whole number from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise _bad(f"invalid_{name}", f"{name} must be a whole number from {low} to {high}")
    return value


def parse_datetime(raw: str, field: str) -> dt.datetime:
    """An ISO 8601 time; naive times are UTC."""
    try:
        if len(raw) > 40:
            raise ValueError
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except (ValueError, TypeError):
        raise _bad(f"invalid_{field}", f"{field} must be an ISO 8601 time, "
                   "e.g. 2026-02-03T10:00:00Z") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    try:
        # Year 1 or 9999 with an offset overflows when moved to UTC.
        year = value.astimezone(dt.timezone.utc).year
    except OverflowError:
        year = 0
    if not 1970 <= year <= 9998:
        raise _bad(f"invalid_{field}", f"{field} is out of range")
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def json_body(shape: str) -> dict:
    """The request body as a JSON object, or a 400 `invalid_body` saying `shape` is expected.

    The one parser of request bodies: strict UTF-8 JSON (no NaN or Infinity), within
    MAX_CONTENT_LENGTH (413 past it, also for a chunked body), and any way a body can fail
    to decode, nesting too deep for the parser included, is the sender's 400, never a 500."""
    raw = request.get_data(cache=False)  # RequestEntityTooLarge (413) past the cap
    cap = current_app.config.get("MAX_CONTENT_LENGTH")
    if request.content_length is None and cap and len(raw) >= cap:
        # A chunked body is cut at the cap without an error; what is left would be
        # parsed as if it were the whole body.
        raise RequestEntityTooLarge()
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError, MemoryError):  # UnicodeDecodeError is a ValueError
        raise _bad("invalid_body", f"the body is not valid JSON; expected a JSON object "
                   f"{shape}") from None
    if not isinstance(body, dict):
        raise _bad("invalid_body", f"expected a JSON object {shape}")
    return body


def _client_address() -> str:
    """The caller's address (from X-Forwarded-For only as far as PHOTO_SYNC_HO_TRUSTED_PROXIES
    allows: the app's ProxyFix has set remote_addr)."""
    return (request.remote_addr or "unknown")[:64]


def _photo_uuid(raw: str) -> uuid.UUID:
    try:
        return protocol.parse_uuid(raw)
    except ValueError:
        raise _bad("invalid_photo_id", "photo id must be a UUID") from None


def _image_url(row: dict) -> str:
    """HO's URL of the photo, with its cache-buster."""
    base = current_app.config.get("PUBLIC_IMAGE_BASE") or ""
    object_key = row["object_key"]
    url = f"{base.rstrip('/')}/{object_key}" if base else _ext().storage.public_url(object_key)
    return f"{url}?v={protocol.cache_buster(row['checksum'])}"


# Fields HO derives rather than keeps in a column; download_url and signed_url are added
# by the listing when HO offers presigned downloads or signed links.
_DERIVED = {"image_url": _image_url}


def photo_json(row: dict) -> dict:
    """A catalog row as the API's photo object: each field of protocol.PHOTO_FIELDS from its
    column, or derived (image_url with its cache-buster)."""
    photo = {}
    for field in protocol.PHOTO_FIELDS:
        if field.ho is not None:
            photo[field.name] = field.to_json(row[field.column])
        elif field.name in _DERIVED:
            photo[field.name] = _DERIVED[field.name](row)
    return photo


def _bookkeeping(write, what: str) -> None:
    """A catalog write the answer does not depend on (failure counts, hash upgrades): on a
    read-only catalog (a standby, default_transaction_read_only) it is skipped, so token
    requests keep working there; the gateway's per-address limit still holds guessers."""
    try:
        with _ext().pool.connection() as conn:
            write(conn)
    except psycopg.errors.ReadOnlySqlTransaction:
        log.warning("catalog is read-only: %s skipped", what)


@bp.post("/auth/token/")
def token():
    """Exchange a store's id and secret for a bearer token; failed attempts are limited."""
    body = json_body('{"store_id": ..., "secret": ...}')
    store_id, secret = body.get("store_id"), body.get("secret")
    if not isinstance(store_id, str) or not isinstance(secret, str) or not secret:
        raise _bad("invalid_body", "store_id and secret must be strings")
    if len(secret) > 512:
        raise _bad("invalid_body", "secret is too long")
    try:
        store_uuid = protocol.parse_uuid(store_id)
    except ValueError:
        raise _bad("invalid_store_id", "store_id must be a UUID") from None
    ext = _ext()
    settings = ext.settings
    address = _client_address()
    # Store ids are not secrets: failures count per (store, address) and per address, never
    # per store alone, and the right secret is checked before any limit, so whoever sends
    # wrong secrets for a store slows only themselves, never the store.
    pair_key, addr_key = f"store:{store_uuid}@{address}", f"addr:{address}"
    with ext.pool.connection() as conn:
        store = catalog.get_store(conn, store_uuid)
    # Unknown and disabled stores pay the same hash work as a wrong secret: the answer's
    # time does not tell which store ids exist.
    matches = catalog.verify_secret(
        secret, store["secret_hash"] if store else catalog.DUMMY_SECRET_HASH)
    if store is None or not store["active"] or not matches:
        with ext.pool.connection() as conn:
            # Counted in the catalog, so the limit holds across gunicorn workers and hosts.
            wait = catalog.auth_blocked(conn, {pair_key: settings.auth_max_failures,
                                               addr_key: settings.auth_max_failures_per_address},
                                        settings.auth_window)
            if wait:
                raise APIError(429, "too_many_failures",
                               "too many failed token requests from this address; "
                               f"retry in {wait} s", {"Retry-After": str(wait)})
        _bookkeeping(lambda conn: catalog.record_auth_failure(
            conn, [pair_key, addr_key], settings.auth_window), "counting a failed token request")
        raise APIError(401, "invalid_credentials", "unknown store, wrong secret, or store disabled")
    _bookkeeping(lambda conn: catalog.clear_auth_failures(conn, pair_key),
                 "forgetting failed token requests")
    if catalog.needs_rehash(store["secret_hash"]):
        _bookkeeping(lambda conn: catalog.upgrade_secret_hash(
            conn, store_uuid, store["secret_hash"], secret), "upgrading a secret hash")
    ttl = current_app.config["TOKEN_TTL"]
    access = auth.issue_token(store, current_app.config["JWT_SECRET"], ttl)
    return jsonify(access=access, token_type="Bearer", expires_in=ttl)


@bp.get("/sync/product-photos/")
@auth.store_required
def list_photos():
    """A page of photo metadata: the legacy offset/since listing or the cursor change feed."""
    auth.check_store_param(request.args.get("store_id"))
    limit = _int_arg("limit", protocol.LIST_LIMIT_DEFAULT, 1, protocol.LIST_LIMIT_MAX)
    offset = _int_arg("offset", 0, 0, MAX_OFFSET)
    raw_since = request.args.get("since") or None
    raw_cursor = request.args.get("cursor")
    since = parse_datetime(raw_since, "since") if raw_since else None
    after_seq = None
    if raw_cursor is not None:
        try:
            after_seq = protocol.decode_cursor(raw_cursor)
        except ValueError:
            raise _bad("invalid_cursor", "cursor is not one this API issued; start over "
                       "without a cursor") from None
        if offset or since:
            raise _bad("conflicting_parameters", "cursor cannot be combined with offset or since")
    with _ext().pool.connection() as conn:
        page = catalog.list_changes(conn, limit=limit, after_seq=after_seq, offset=offset,
                                    since=since)
    photos = [photo_json(row) for row in page.photos]
    if current_app.config["PRESIGNED_DOWNLOADS"]:
        # The bytes can bypass the API: a short-lived S3 URL per live photo. The store
        # verifies what it gets against checksum and checksum_sha256 from this listing.
        storage, ttl = _ext().storage, current_app.config["PRESIGN_TTL"]
        for photo, row in zip(photos, page.photos):
            if not photo["deleted"]:
                photo["download_url"] = storage.presign(row["object_key"], ttl)
                metrics.downloaded("presigned", row["size"])
    secret = _ext().settings.signed_link_secret
    if secret:
        # The deployed default behind the ho_gateway: a link per live photo that nginx
        # checks and serves from S3 itself (ho/links.py), so a download runs no Python.
        signer = links.LinkSigner(_ext().storage, secret, _ext().settings.signed_link_ttl,
                                  str(g.store_id))
        for photo, row in zip(photos, page.photos):
            if not photo["deleted"]:
                photo["signed_url"] = signer.link(row)
                photo["signed_url_expires"] = signer.expires
                metrics.downloaded("signed", row["size"])
    return jsonify(
        photos=photos,
        total=page.total,
        has_more=page.has_more,
        next_offset=page.next_offset,
        next_cursor=protocol.encode_cursor(page.next_seq),
        # Optional (older agents ignore them): where the feed ends and which catalog it
        # is, so a store notices HO's history going back (a restore) under its cursor.
        head_cursor=None if page.head is None else protocol.encode_cursor(page.head),
        epoch=page.epoch,
    )


@bp.get("/sync/product-photos/<photo_id>/download/")
def download(photo_id: str):
    """One photo's bytes with checksum, version and ETag (304 when the ETag is current),
    streamed from S3 or, behind the ho_gateway, handed to nginx (X-Accel-Redirect)."""
    # The hottest endpoint: the store check of auth.store_required and the photo lookup
    # share one pool checkout and one statement; the answers (and their order) are the same.
    store_id, generation = auth.decode_token()
    try:
        photo_uuid = protocol.parse_uuid(photo_id)
    except ValueError:
        photo_uuid = None
    with _ext().pool.connection() as conn:
        store, row = catalog.get_store_and_photo(conn, store_id, photo_uuid)
    auth.check_store(store, generation)
    g.store_id = store_id
    auth.check_store_param(request.args.get("store_id"))
    if photo_uuid is None:
        _photo_uuid(photo_id)  # the 400 invalid_photo_id
    if row is None or row["deleted_at"] is not None:
        raise APIError(404, "not_found", f"photo {photo_uuid} does not exist or was deleted")
    etag = row["checksum"]
    headers = {
        protocol.HEADER_CHECKSUM: row["checksum"],
        protocol.HEADER_VERSION: str(row["version"]),
        "Cache-Control": "private, max-age=0, must-revalidate",
    }
    if row["checksum_sha256"]:
        headers[protocol.HEADER_CHECKSUM_SHA256] = row["checksum_sha256"]
    # If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/"x" matches "x".
    if request.if_none_match.contains_weak(etag):
        response = Response(status=304, headers=headers)
        response.set_etag(etag)
        return response
    if request.method == "HEAD":
        # Headers only: no S3 GET whose connection nobody would read or release.
        response = Response(status=200, mimetype=row["content_type"], headers=headers)
        response.headers["Content-Length"] = str(row["size"])
        response.set_etag(etag)
        return response
    if _ext().settings.accel_redirect:
        return _accel_redirect(row, headers, etag)
    inflight, store_id = _ext().inflight, g.store_id
    if not inflight.enter(store_id, current_app.config["MAX_DOWNLOADS_PER_STORE"]):
        raise APIError(429, "too_many_requests",
                       "this store already has the most downloads in flight that HO allows; "
                       "retry after the Retry-After delay", {"Retry-After": "1"})
    try:
        size, chunks = _ext().storage.open(row["object_key"])
    except ObjectMissing:
        inflight.leave(store_id)
        raise APIError(404, "object_missing", f"photo {photo_uuid} is in the catalog but its "
                       "bytes are missing from storage; re-import it at HO") from None
    except BaseException:
        inflight.leave(store_id)
        raise
    headers["Content-Length"] = str(size)
    # direct_passthrough hands the stream itself to the server, which calls its close().
    chunks.on_close.append(lambda: inflight.leave(store_id))
    response = Response(chunks, mimetype=row["content_type"], headers=headers,
                        direct_passthrough=True)
    metrics.downloaded("stream", size)
    response.set_etag(etag)
    return response


def _accel_redirect(row: dict, headers: dict, etag: str) -> Response:
    """The download handed to the ho_gateway: an empty answer with X-Accel-Redirect.

    The URI carries what nginx drops on an internal redirect (checksums, version) and a
    presigned S3 GET: `/_s3/<md5>/<sha256 or ->/<version>/<bucket>/<key>?<query>`. The
    per-worker in-flight counter is not taken: the API returns at once, nginx streams the
    bytes, and the gateway's limit_conn per store is the cap on that transfer."""
    target = _ext().storage.presign_path(row["object_key"], ACCEL_PRESIGN_TTL)
    sha256 = row["checksum_sha256"] or "-"
    response = Response(status=200, headers=headers)
    # No Content-Type: nginx would keep it through the redirect, on its own JSON errors too
    # (S3 missing, S3 down); S3 sends the photo's own, stored by the importer.
    del response.headers["Content-Type"]
    response.headers["X-Accel-Redirect"] = (f"/_s3/{row['checksum']}/{sha256}/"
                                            f"{row['version']}{target}")
    # The store this token proved to be: the gateway's per-store download cap is keyed on
    # it (nginx drops the header on the internal redirect; the store never sees it).
    response.headers["X-Photo-Sync-Store"] = str(g.store_id)
    metrics.downloaded("accel", row["size"])
    response.set_etag(etag)
    return response


def _validate_report_item(index: int, item) -> dict:
    """One status report item, checked and normalised; 400 naming the field otherwise."""
    where = f"sync_batch[{index}]"
    if not isinstance(item, dict):
        raise _bad("invalid_body", f"{where} must be an object")
    try:
        photo_uuid = protocol.parse_uuid(item.get("photo_id"))
    except ValueError:
        raise _bad("invalid_body", f"{where}.photo_id must be a UUID") from None
    status = item.get("status")
    if status not in protocol.REPORT_STATUSES:
        raise _bad("invalid_body", f"{where}.status must be one of "
                   f"{', '.join(protocol.REPORT_STATUSES)}")
    version = item.get("version", 0)
    if version is None:
        version = 0
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 2**31:
        raise _bad("invalid_body", f"{where}.version must be a non-negative integer")
    synced_at = item.get("synced_at")
    if synced_at is not None:
        if not isinstance(synced_at, str):
            raise _bad("invalid_body", f"{where}.synced_at must be an ISO 8601 string or null")
        synced_at = parse_datetime(synced_at, "synced_at")
    error = item.get("error")
    if error is not None and not isinstance(error, str):
        raise _bad("invalid_body", f"{where}.error must be a string or null")
    if error is not None:
        # PostgreSQL text holds neither NUL nor lone surrogates (valid in JSON strings);
        # keep the store's message readable rather than refuse the whole report.
        error = (error[:MAX_ERROR_TEXT].replace("\x00", "")
                 .encode("utf-8", "backslashreplace").decode("utf-8"))
    return {"photo_id": photo_uuid, "status": status, "version": version,
            "synced_at": synced_at, "error": error}


@bp.post("/sync/product-photos/status/")
@auth.store_required
def report_status():
    """Record the calling store's per-photo statuses; ids HO never had are ignored, counted."""
    body = json_body('{"store_id": ..., "sync_batch": [...]}')
    store_id = auth.check_store_param(body.get("store_id"))
    batch = body.get("sync_batch")
    if not isinstance(batch, list):
        raise _bad("invalid_body", "sync_batch must be a list")
    if len(batch) > protocol.REPORT_BATCH_MAX:
        raise APIError(413, "batch_too_large",
                       f"at most {protocol.REPORT_BATCH_MAX} items per report; send several")
    items = [_validate_report_item(i, item) for i, item in enumerate(batch)]
    # The last word on a photo within one batch wins, as if sent one by one.
    latest = {}
    for item in items:
        latest[item["photo_id"]] = item
    with _ext().pool.connection() as conn:
        unknown = catalog.record_statuses(conn, store_id, list(latest.values()))
    ignored = sum(1 for item in items if item["photo_id"] in unknown)
    count = len(items) - ignored
    message = f"recorded {count} status reports"
    if ignored:
        # Still a 200: the store's report is delivered; HO has nothing to attach it to.
        message += f"; ignored {ignored} about photos HO does not have"
    return jsonify(message=message, count=count, ignored=ignored)


@bp.get("/health/")
def health():
    """Liveness and readiness: 200 when catalog and storage answer, 503 with which did not."""
    ext = _ext()
    result = {"catalog": {"ok": True}, "storage": {"ok": True}}
    try:
        with ext.pool.connection(timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure means "not ready"; the detail says which
        result["catalog"] = {"ok": False, "detail": type(exc).__name__}
    try:
        ext.storage.check()
    except StorageUnavailable as exc:
        result["storage"] = {"ok": False, "detail": str(exc)[:200]}
    ok = result["catalog"]["ok"] and result["storage"]["ok"]
    result["status"] = "ok" if ok else "degraded"
    response = jsonify(result)
    response.status_code = 200 if ok else 503
    return response


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.0 document of this API."""
    return jsonify(spec(request.host_url.rstrip("/")))
