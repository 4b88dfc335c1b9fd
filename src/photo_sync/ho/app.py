"""The HO sync API application factory: `gunicorn 'photo_sync.ho.app:create_app()'`."""

from __future__ import annotations

import logging
import os

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


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app from the environment (PHOTO_SYNC_HO_*), or from `test_config` overrides."""
    app = Flask(__name__)
    config_file = os.environ.get("PHOTO_SYNC_HO_CONFIG")
    settings = HOSettings.load(config_file, overrides=test_config)
    app.config.update(
        JWT_SECRET=settings.jwt_secret,
        TOKEN_TTL=settings.token_ttl,
        PUBLIC_IMAGE_BASE=settings.public_image_base,
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
