"""JSON errors for every failure: `{"error": "<code>", "detail": "<text>"}`, never an HTML page."""

from __future__ import annotations

import logging

import psycopg
import psycopg_pool
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from photo_sync.errors import DatabaseUnavailable, StorageRefused, StorageUnavailable

log = logging.getLogger(__name__)


class APIError(Exception):
    """A request HO refuses: the HTTP status, the error code and the words for the store."""

    def __init__(self, status: int, code: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def error_response(status: int, code: str, detail: str, headers: dict | None = None):
    """The one shape of an error answer: JSON `{"error", "detail"}` with the given status."""
    response = jsonify(error=code, detail=detail)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def init_app(app: Flask) -> None:
    """Register the JSON error handlers on `app`."""

    @app.errorhandler(APIError)
    def _api_error(exc: APIError):
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_").replace("'", "")
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    # Before StorageUnavailable (its base): S3 answered, so "not answering" would mislead,
    # and the bytes may be there, so it is no object_missing either.
    @app.errorhandler(StorageRefused)
    def _storage_refused(exc: StorageRefused):
        log.error("storage refused HO's request: %s", exc)
        return error_response(503, "storage_refused",
                              f"the photo store (S3) refused HO's request ({exc.code}: HO's S3 "
                              "key or clock); HO's operators must fix it; retry later",
                              {"Retry-After": "30"})

    @app.errorhandler(StorageUnavailable)
    def _storage_down(exc: StorageUnavailable):
        log.warning("storage unavailable: %s", exc)
        return error_response(503, "storage_unavailable",
                              "the photo store (S3) is not answering; retry later",
                              {"Retry-After": "5"})

    # lock_timeout and statement_timeout (photo_sync.db) end a stuck request here.
    @app.errorhandler(psycopg.errors.LockNotAvailable)
    @app.errorhandler(psycopg.errors.QueryCanceled)
    def _catalog_busy(exc: Exception):
        log.warning("catalog busy: %s", str(exc).strip().splitlines()[0] if str(exc) else exc)
        return error_response(503, "catalog_busy",
                              "the HO catalog database is busy (a lock or a long statement "
                              "held this request); retry later", {"Retry-After": "5"})

    # A standby or a catalog set read-only: reads keep working, writes wait for the primary.
    @app.errorhandler(psycopg.errors.ReadOnlySqlTransaction)
    def _catalog_read_only(exc: Exception):
        log.warning("catalog is read-only: %s", str(exc).strip().splitlines()[0] if str(exc)
                    else type(exc).__name__)
        return error_response(503, "catalog_read_only",
                              "the HO catalog database is read-only right now (a standby, or "
                              "set read-only for maintenance); reads work, this write does "
                              "not: retry later", {"Retry-After": "30"})

    # New code on an old catalog (init-db not yet run by the rollout): say what to run.
    @app.errorhandler(psycopg.errors.UndefinedTable)
    @app.errorhandler(psycopg.errors.UndefinedColumn)
    def _catalog_behind(exc: Exception):
        log.error("catalog schema is older than this API: run `photo-sync-ho init-db` (%s)",
                  str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__)
        return error_response(503, "catalog_not_ready",
                              "the HO catalog schema is older than this API; retry later",
                              {"Retry-After": "30"})

    @app.errorhandler(psycopg.OperationalError)
    @app.errorhandler(psycopg_pool.PoolTimeout)
    @app.errorhandler(DatabaseUnavailable)
    def _catalog_down(exc: Exception):
        log.warning("catalog unavailable: %s", exc)
        return error_response(503, "catalog_unavailable",
                              "the HO catalog database is not answering; retry later",
                              {"Retry-After": "5"})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error")
        return error_response(500, "internal_error", "unexpected server error; see the HO log")
