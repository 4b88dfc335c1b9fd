"""The HO sync API application factory: `gunicorn 'photo_sync.ho.app:create_app()'`."""

from __future__ import annotations

import logging
import threading

from flask import Flask
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from werkzeug.middleware.proxy_fix import ProxyFix

from photo_sync import db
from photo_sync.ho import api, errors, metrics
from photo_sync.ho.settings import HOSettings
from photo_sync.ho.storage import Storage

# The largest request body any endpoint reads (a full status report is ~250 KB).
MAX_BODY_BYTES = 1024 * 1024


class PhotoSyncExtension:
    """Per-process resources: the settings, the catalog pool and the S3 client."""

    def __init__(self, settings: HOSettings, pool_size: int):
        self.settings = settings
        # Opened without waiting: the API starts (and reports health) while the
        # catalog is still down; requests that need it get a 503. Every session sets
        # statement_timeout and lock_timeout, so a stuck lock is a 503, not a hung thread.
        # A connection to a dead or read-only host fails the check and is replaced by one
        # to whichever host of a multi-host URL is primary now (photo_sync.db). A request
        # waits at most `timeout` for one: with no primary it is a 503 within 5 s, sooner
        # than a store's request timeout.
        self.pool = ConnectionPool(
            settings.database_url, min_size=1, max_size=pool_size, open=False,
            kwargs={**settings.connect_kwargs(), "row_factory": dict_row, "autocommit": True},
            check=db.check_writable, reconnect_timeout=db.RECONNECT_TIMEOUT, timeout=5,
            name="ho-catalog")
        self.pool.open(wait=False)
        self.storage = Storage.from_settings(settings)
        self.inflight = InflightCounter()


class InflightCounter:
    """Downloads in flight per store in this worker: one store cannot take every thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict = {}

    def enter(self, key, limit: int) -> bool:
        """Take a slot for `key`; False when it already holds `limit`."""
        with self._lock:
            if self._counts.get(key, 0) >= limit:
                return False
            self._counts[key] = self._counts.get(key, 0) + 1
            return True

    def leave(self, key) -> None:
        """Give back a slot taken by `enter`."""
        with self._lock:
            self._counts[key] -= 1
            if not self._counts[key]:
                del self._counts[key]


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app from `HOSettings` (PHOTO_SYNC_HO_*), with `test_config` overrides."""
    app = Flask(__name__)
    settings = HOSettings.load(overrides=test_config)
    app.config.update(
        JWT_SECRET=settings.jwt_secret,
        TOKEN_TTL=settings.token_ttl,
        TOKEN_LEEWAY=settings.token_leeway,
        PUBLIC_IMAGE_BASE=settings.public_image_base,
        MAX_DOWNLOADS_PER_STORE=settings.max_downloads_per_store,
        PRESIGNED_DOWNLOADS=settings.presigned_downloads,
        PRESIGN_TTL=settings.presign_ttl,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        JSON_SORT_KEYS=False,
    )
    if settings.trusted_proxies:
        # Only the last N X-Forwarded-For hops are ours; anything before them is the
        # client's word and never becomes the address the token limit counts.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)
    app.extensions["photo_sync"] = PhotoSyncExtension(settings, pool_size=settings.threads + 2)
    errors.init_app(app)
    metrics.init_app(app)
    app.register_blueprint(api.bp)
    app.url_map.strict_slashes = True
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return app
