"""The HO sync API application factory: `gunicorn 'photo_sync.ho.app:create_app()'`."""

from __future__ import annotations

import logging
import os
import threading

from flask import Flask
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from photo_sync.ho import api, errors
from photo_sync.ho.settings import HOSettings
from photo_sync.ho.storage import Storage

MAX_BODY_BYTES = 1024 * 1024


class PhotoSyncExtension:
    """Per-process resources: the catalog pool and the S3 client."""

    def __init__(self, settings: HOSettings, pool_size: int):
        self.settings = settings
        # Opened without waiting: the API starts (and reports health) while the
        # catalog is still down; requests that need it get a 503.
        self.pool = ConnectionPool(
            settings.database_url, min_size=1, max_size=pool_size, open=False,
            kwargs={"row_factory": dict_row, "connect_timeout": 5, "autocommit": True},
            check=ConnectionPool.check_connection, timeout=10, name="ho-catalog")
        self.pool.open(wait=False)
        self.storage = Storage.from_settings(settings)
        self.inflight = InflightCounter()


class InflightCounter:
    """Downloads in flight per store in this worker: one store cannot take every thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict = {}

    def enter(self, key, limit: int) -> bool:
        with self._lock:
            if self._counts.get(key, 0) >= limit:
                return False
            self._counts[key] = self._counts.get(key, 0) + 1
            return True

    def leave(self, key) -> None:
        with self._lock:
            self._counts[key] -= 1
            if not self._counts[key]:
                del self._counts[key]


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app from the environment (PHOTO_SYNC_HO_*), or from `test_config` overrides."""
    app = Flask(__name__)
    config_file = os.environ.get("PHOTO_SYNC_HO_CONFIG")
    settings = HOSettings.load(config_file, overrides=test_config)
    app.config.update(
        JWT_SECRET=settings.jwt_secret,
        TOKEN_TTL=settings.token_ttl,
        PUBLIC_IMAGE_BASE=settings.public_image_base,
        MAX_DOWNLOADS_PER_STORE=settings.max_downloads_per_store,
        PRESIGNED_DOWNLOADS=settings.presigned_downloads,
        PRESIGN_TTL=settings.presign_ttl,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        JSON_SORT_KEYS=False,
    )
    threads = int(os.environ.get("PHOTO_SYNC_HO_THREADS", "8") or 8)
    app.extensions["photo_sync"] = PhotoSyncExtension(settings, pool_size=threads + 2)
    errors.init_app(app)
    app.register_blueprint(api.bp)
    app.url_map.strict_slashes = True
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return app
