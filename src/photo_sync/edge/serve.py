"""The store's photo server: `gunicorn 'photo_sync.edge.serve:create_app()'`.

The store's apps read product photos from here, so they keep showing photos
when the WAN is down. It only reads the edge table (a role with SELECT on it is
enough) and writes nothing.

- `GET /photos/<uuid>`: the stored bytes, `ETag` = their MD5, `Last-Modified`;
  `If-None-Match` -> 304. With `?v=<first 8 hex of the checksum>` matching, the
  URL names these exact bytes, so it may be cached for a year (`immutable`);
  anything else gets a short max-age, since the photo may change at the next sync.
- A photo the store holds no synced bytes for (pending, failed, reset by a
  rollback): a 302 to HO's image URL for it, built as
  `PHOTO_SYNC_EDGE_HO_IMAGE_BASE/<object_key>?v=<checksum[:8]>` (the shape of
  HO's `image_url`; the edge table keeps no URL column). Without that setting,
  404 JSON `not_synced`.
- `GET /products/<uuid>/photos`: the product's photos, primary first, then by
  `sort_order`, each with its store URL, so an app needs one call per product.
- `/health`: 200 when the table answers, 503 JSON otherwise.

Bytes are fetched in binary (raw, not hex-escaped), so each response holds one
copy of the photo, handed to gunicorn as is.

With the photo mirror (PHOTO_SYNC_EDGE_SERVE_CACHE_DIR: the folder the sync agent
keeps after each run, bounded by a byte budget and a free-space floor, see
`photo_sync.edge.mirror`), a photo whose mirrored file holds its current bytes is
answered from that file with `wsgi.file_wrapper` (sendfile: no byte passes through
Python). The database stays the source of truth here: every request still reads the
photo's row (checksum, length, status) first, and only the object named by that exact
checksum and type, of that length, is served, so a changed photo is never answered with
its old bytes. The server only reads the mirror; it writes nothing. In front of it, nginx
serves the same mirror without Python (the edge role's photo-sync-edge-nginx.conf.j2) and
passes only misses here.

Settings (environment or the file in PHOTO_SYNC_EDGE_CONFIG): the edge's
DATABASE_URL and TABLE, plus HO_IMAGE_BASE, SERVE_BIND (127.0.0.1:8081),
SERVE_WORKERS (2), SERVE_THREADS (8), SERVE_CACHE_DIR (none).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import urllib.parse
import uuid
from pathlib import Path

import psycopg
from flask import Flask, Response, current_app, jsonify, redirect, request
from psycopg_pool import ConnectionPool, PoolTimeout
from werkzeug.exceptions import HTTPException
from werkzeug.http import http_date, quote_etag
from werkzeug.utils import get_content_type
from werkzeug.wsgi import FileWrapper, wrap_file

from photo_sync import db, protocol
from photo_sync.config import Settings
from photo_sync.edge import mirror
from photo_sync.edge.settings import PREFIX, EdgeSettings
from photo_sync.edge.store import EdgeStore
from photo_sync.errors import ConfigError

IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=60"
# A redirect is temporary: the store will hold the bytes after its next sync.
REDIRECT_CACHE = "no-store"
DEFAULT_BIND = "127.0.0.1:8081"
# Serving reads are small; a stuck one should fail fast, not hold a thread.
STATEMENT_TIMEOUT_MS = 10_000


def create_app(test_config: dict | None = None) -> Flask:
    """Build the photo server from the edge settings (PHOTO_SYNC_EDGE_*)."""
    config_file = os.environ.get(PREFIX + "CONFIG") or None
    settings = EdgeSettings.load(config_file, need_ho=False, overrides=test_config)
    extra = Settings(PREFIX, config_file, overrides=test_config)
    threads = extra.get_int("SERVE_THREADS", 8, minimum=1)
    app = Flask(__name__)
    cache_dir = settings.serve_cache_dir.strip()
    app.config.update(TABLE=settings.table,
                      HO_IMAGE_BASE=(extra.get("HO_IMAGE_BASE") or "").rstrip("/"),
                      CACHE_DIR=cache_dir or None)
    # Opened without waiting, so the server starts (and /health says 503) while the
    # database is still down. No check on checkout: it would double the round trips of
    # every request; a connection that broke fails one request (503) and is replaced.
    pool = ConnectionPool(
        settings.database_url, min_size=1, max_size=threads + 1, open=False, timeout=5,
        kwargs={**db.connect_kwargs(STATEMENT_TIMEOUT_MS, STATEMENT_TIMEOUT_MS),
                "autocommit": True}, name="edge-serve")
    pool.open(wait=False)
    app.extensions["photo_sync_serve"] = pool
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(psycopg.Error, _db_error)
    app.register_error_handler(PoolTimeout, _db_error)
    app.add_url_rule("/photos/<photo_id>", view_func=photo)
    app.add_url_rule("/products/<product_id>/photos", view_func=product_photos)
    app.add_url_rule("/health", view_func=health)
    if cache_dir:
        app.wsgi_app = _FastPhotos(app, app.wsgi_app)
    return app


class _FastPhotos:
    """The common request, a plain GET of a photo whose file is in the cache, answered
    without Flask: one metadata read, then the file by sendfile. It carries the same
    headers the Flask view sets (the tests hold both to the same contract); every other
    request, and any doubt (not a UUID, no row, no bytes, not cached, a database error),
    goes to the Flask app unchanged. Flask's request handling was about half of the CPU
    of a cached photo's request (bench/profiles/README.md)."""

    def __init__(self, app: Flask, flask_wsgi):
        self.app = app
        self.flask_wsgi = flask_wsgi
        self.table = app.config["TABLE"]
        self.cache_dir = app.config["CACHE_DIR"]
        self.pool: ConnectionPool = app.extensions["photo_sync_serve"]

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if (path.startswith("/photos/") and environ.get("REQUEST_METHOD") == "GET"
                and "HTTP_IF_NONE_MATCH" not in environ):
            answer = self._photo(environ, start_response, path[len("/photos/"):])
            if answer is not None:
                return answer
        return self.flask_wsgi(environ, start_response)

    def _photo(self, environ, start_response, raw_id: str):
        try:
            photo_id = protocol.parse_uuid(raw_id)
        except ValueError:
            return None
        try:
            with self.pool.connection() as conn:
                row = EdgeStore.serve_photo(conn, self.table, photo_id, with_bytes=False)
        except (psycopg.Error, PoolTimeout):
            return None
        # The view answers what this path cannot; it reuses the row (and that no cached file
        # was found) instead of reading them again.
        environ[_ROW_READ] = row
        if row is None or not row["held"]:
            return None
        cached = _cached_file(self.cache_dir, row)
        if cached is None:
            return None
        handle, nbytes = cached
        checksum = row["checksum"] or ""
        wanted = None
        for name, value in urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")):
            if name == "v":
                wanted = value
                break
        cache = IMMUTABLE if wanted and checksum and wanted == protocol.cache_buster(
            checksum) else SHORT
        headers = [("Content-Type", get_content_type(row["content_type"]
                                                     or "application/octet-stream", "utf-8")),
                   ("Content-Length", str(nbytes)), ("Cache-Control", cache),
                   ("ETag", quote_etag(checksum))]
        if row["modified"] is not None:
            headers.append(("Last-Modified", http_date(row["modified"])))
        start_response("200 OK", headers)
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is None:
            return FileWrapper(handle)
        return wrapper(handle, 256 * 1024)


# environ key: the row the fast path read for this request (metadata, no bytes; None: no row).
_ROW_READ = "photo_sync.serve.row"


def _pool() -> ConnectionPool:
    return current_app.extensions["photo_sync_serve"]


def _error(status: int, code: str, detail: str) -> Response:
    response = jsonify(error=code, detail=detail)
    response.status_code = status
    return response


def _http_error(exc: HTTPException) -> Response:
    return _error(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"),
                  exc.description or "")


def _db_error(exc: Exception) -> Response:
    current_app.logger.warning("store database unavailable: %s", type(exc).__name__)
    response = _error(503, "database_unavailable",
                      "the store database does not answer; try again shortly")
    response.headers["Retry-After"] = "5"
    return response


def _uuid_or_404(raw: str, what: str) -> uuid.UUID | Response:
    try:
        return protocol.parse_uuid(raw)
    except ValueError:
        return _error(404, "not_found", f"{what} id must be a UUID")


def photo(photo_id: str):
    """The stored bytes of one photo, or a redirect to HO while the store has none."""
    parsed = _uuid_or_404(photo_id, "photo")
    if isinstance(parsed, Response):
        return parsed
    conditional = request.if_none_match
    cache_dir = current_app.config["CACHE_DIR"]
    cached = None
    looked = _ROW_READ in request.environ  # the fast path read the row, found no file
    with _pool().connection() as conn:
        if looked:
            row = request.environ[_ROW_READ]
        else:
            # A revalidation usually ends in 304, and a cached photo is read from its file:
            # ask for the bytes only when they are needed.
            row = EdgeStore.serve_photo(conn, current_app.config["TABLE"], parsed,
                                        with_bytes=not conditional and not cache_dir)
        needs_bytes = (row is not None and row["held"] and row["data"] is None and not (
            conditional and conditional.contains_weak(row["checksum"])))
        if needs_bytes and cache_dir and not looked:
            cached = _cached_file(cache_dir, row)
            needs_bytes = cached is None
        if needs_bytes:
            row = EdgeStore.serve_photo(conn, current_app.config["TABLE"], parsed,
                                        with_bytes=True)
    if row is None:
        return _error(404, "not_found", f"no photo {parsed} in this store")
    if not row["held"]:
        return _fallback(row)
    checksum = row["checksum"] or ""
    wanted = request.args.get("v")
    cache = IMMUTABLE if wanted and checksum and wanted == protocol.cache_buster(
        checksum) else SHORT
    headers = {"Cache-Control": cache}
    if conditional and conditional.contains_weak(checksum):
        response = Response(status=304, headers=headers)
    elif cached is not None:
        handle, nbytes = cached
        # wsgi.file_wrapper: gunicorn sends the file with sendfile(2).
        response = Response(wrap_file(request.environ, handle), status=200, headers=headers,
                            mimetype=row["content_type"] or "application/octet-stream",
                            direct_passthrough=True)
        response.headers["Content-Length"] = str(nbytes)
    else:
        data = row["data"]
        # direct_passthrough: werkzeug hands the one bytes object to gunicorn untouched.
        response = Response([data], status=200, headers=headers,
                            mimetype=row["content_type"] or "application/octet-stream",
                            direct_passthrough=True)
        response.headers["Content-Length"] = str(len(data))
    response.set_etag(checksum)
    if row["modified"] is not None:
        response.last_modified = row["modified"]
    return response


def _cached_file(cache_dir: str, row: dict):
    """(open file, length) of this row's bytes in the mirror, or None. Only the object named
    by the row's checksum and type, and of the row's length, counts."""
    name = mirror.object_name(row["checksum"], row["content_type"])
    if name is None or row["nbytes"] is None:
        return None
    try:
        handle = open(mirror.object_file(cache_dir, name), "rb")
    except OSError:
        return None
    try:
        if os.fstat(handle.fileno()).st_size != row["nbytes"]:
            handle.close()
            return None
    except OSError:
        handle.close()
        return None
    return handle, row["nbytes"]


def _fallback(row: dict) -> Response:
    base = current_app.config["HO_IMAGE_BASE"]
    if not base or not row["object_key"]:
        return _error(404, "not_synced", f"photo {row['id']} is not synced to this store yet "
                      "and no PHOTO_SYNC_EDGE_HO_IMAGE_BASE is set to send clients to HO")
    url = f"{base}/{urllib.parse.quote(row['object_key'], safe='/')}"
    if row["checksum"]:
        url += f"?v={protocol.cache_buster(row['checksum'])}"
    response = redirect(url, code=302)
    response.headers["Cache-Control"] = REDIRECT_CACHE
    return response


def product_photos(product_id: str):
    """A product's photos in display order, each with its store URL."""
    parsed = _uuid_or_404(product_id, "product")
    if isinstance(parsed, Response):
        return parsed
    with _pool().connection() as conn:
        rows = EdgeStore.serve_product_photos(conn, current_app.config["TABLE"], parsed)
    root = request.script_root
    photos = []
    for row in rows:
        url = f"{root}/photos/{row['id']}"
        if row["checksum"]:
            url += f"?v={protocol.cache_buster(row['checksum'])}"
        # The served fields of the field table (protocol.PHOTO_FIELDS), each converted.
        item = {f.name: f.serve(row[f.name]) for f in protocol.edge_fields() if f.serve}
        photos.append({**item, "url": url, "held": row["held"]})
    response = jsonify(product_id=str(parsed), photos=photos)
    response.headers["Cache-Control"] = SHORT
    return response


def health():
    """200 when the store database answers a read of the photo table."""
    table = current_app.config["TABLE"]
    try:
        with _pool().connection(timeout=3) as conn:
            EdgeStore.serve_product_photos(conn, table, uuid.UUID(int=0))
    except (psycopg.Error, PoolTimeout) as exc:
        return _error(503, "database_unavailable",
                      f"the store database does not answer ({type(exc).__name__})")
    return jsonify(status="ok")


# CLI ------------------------------------------------------------------------------------

def gunicorn_argv(settings: Settings, bind: str | None = None) -> list[str]:
    """The gunicorn command line `serve` runs (gthread: one slow client holds a thread)."""
    gunicorn = Path(sys.executable).parent / "gunicorn"
    exe = str(gunicorn) if gunicorn.exists() else shutil.which("gunicorn")
    if not exe:
        raise ConfigError("gunicorn is not installed beside photo-sync: install the "
                          "photo-sync package with its dependencies")
    return [exe, "--bind", bind or settings.get("SERVE_BIND", DEFAULT_BIND),
            "--workers", str(settings.get_int("SERVE_WORKERS", 2, minimum=1)),
            "--threads", str(settings.get_int("SERVE_THREADS", 8, minimum=1)),
            "--worker-class", "gthread", "--timeout", "30", "--access-logfile", "-",
            "photo_sync.edge.serve:create_app()"]


def run(args: argparse.Namespace) -> int:
    """`photo-sync-edge serve`: replace this process with gunicorn serving `create_app()`."""
    config = getattr(args, "config", None)
    # Fail here, in the operator's terminal, rather than in every gunicorn worker.
    EdgeSettings.load(config, need_ho=False)
    argv = gunicorn_argv(Settings(PREFIX, config), args.bind)
    if config:
        os.environ[PREFIX + "CONFIG"] = str(Path(config).resolve())
    sys.stdout.flush()
    os.execv(argv[0], argv)
    return 0  # not reached
