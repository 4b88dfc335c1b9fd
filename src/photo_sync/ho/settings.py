"""The one HO settings object, read by the app factory, the CLI and `gunicorn_conf.py`.

Settings come from the environment (a systemd EnvironmentFile=) or from a
KEY=VALUE file given with `--config` or named by `PHOTO_SYNC_HO_CONFIG`; the
environment wins. No other HO module reads `PHOTO_SYNC_HO_*` by itself, so
every setting has one name, one default and one check, here.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass

from photo_sync import db
from photo_sync.config import ConfigError, Settings, read_fields, setting

PREFIX = "PHOTO_SYNC_HO_"
MIN_JWT_SECRET_BYTES = 32
# The same cap as the edge's PHOTO_SYNC_EDGE_MAX_PHOTO_BYTES default: HO never imports a
# photo that no store would accept.
MAX_PHOTO_BYTES = 50 * 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _default_workers() -> int:
    return min(4, multiprocessing.cpu_count() * 2)


def _public_endpoint(raw: str) -> str:
    """S3_PUBLIC_ENDPOINT as given: host:port, or http(s)://host:port (e.g. the ho_gateway)."""
    if "://" in raw:
        scheme, _, rest = raw.partition("://")
        if scheme not in ("http", "https") or not rest.strip("/") or "/" in rest.strip("/"):
            raise ConfigError(f"{PREFIX}S3_PUBLIC_ENDPOINT must be host:port or "
                              "http(s)://host:port (no path), e.g. https://ho-gateway.example")
    return raw


def _signed_link_secret(raw: str) -> str:
    if raw and len(raw.encode()) < MIN_JWT_SECRET_BYTES:
        raise ConfigError(f"{PREFIX}SIGNED_LINK_SECRET must be at least {MIN_JWT_SECRET_BYTES} "
                          "random bytes (e.g. `openssl rand -hex 32`), the same value as the "
                          "gateway's ho_gateway_signed_link_secret; or unset for no signed links")
    return raw


def _metrics_bind(raw: str) -> str:
    """METRICS_BIND as host:port (an IPv6 host in brackets); "off": no endpoint ("")."""
    if raw.lower() == "off":
        return ""
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{PREFIX}METRICS_BIND={raw!r} must be host:port, e.g. "
                          "127.0.0.1:9464, or off for no metrics endpoint")
    return raw


def _log_level(raw: str) -> str:
    level = raw.lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{PREFIX}LOG_LEVEL={level!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


@dataclass(frozen=True)
class HOSettings:
    """Every HO setting, typed and checked; S3 and the JWT key only where they are needed.

    Each field is read from PHOTO_SYNC_HO_<FIELD NAME> by `load` (`config.read_fields`):
    its default, minimum and check are written here, once."""

    database_url: str = setting("", hint="the HO catalog, a libpq URL")
    s3_endpoint: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_bucket: str = "product-photos"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    jwt_secret: str = ""
    token_ttl: int = setting(3600, minimum=60)
    # Seconds of clock difference between API hosts a token's iat and exp may show.
    token_leeway: int = setting(30, minimum=0)
    public_image_base: str = ""
    max_downloads_per_store: int = setting(16, minimum=1)
    presigned_downloads: bool = False
    s3_public_endpoint: str = setting("", parse=_public_endpoint)
    presign_ttl: int = setting(900, minimum=60)
    # Behind the ho_gateway nginx: downloads answer X-Accel-Redirect and nginx fetches the
    # bytes from S3, so no photo byte passes through Python.
    accel_redirect: bool = False
    # Behind the ho_gateway nginx: the listing signs, per live photo, a /signed/ link the
    # gateway checks itself (secure_link) and serves from S3, so no Python runs per photo.
    # Empty: no signed links. The gateway's ho_gateway_signed_link_secret, same value.
    signed_link_secret: str = setting("", parse=_signed_link_secret)
    # How long a signed link works: the bound on a disabled store's links (docs/api.md).
    signed_link_ttl: int = setting(900, minimum=60, maximum=86400)
    # gunicorn (gunicorn_conf.py) and the app's pool size.
    bind: str = "127.0.0.1:8080"
    workers: int = 0  # 0: min(4, 2 x CPUs), see `worker_count`
    threads: int = setting(8, minimum=1)
    log_level: str = setting("info", parse=_log_level)
    # The Prometheus endpoint, served by the gunicorn master on its own address (never the
    # API's, which the gateway forwards to): photo_sync.ho.metrics.
    metrics_bind: str = setting("127.0.0.1:9464", parse=_metrics_bind)
    # Database sessions: a stuck lock ends as a 503 or an error, never as a hang.
    statement_timeout_ms: int = setting(db.STATEMENT_TIMEOUT_MS, minimum=100)
    lock_timeout_ms: int = setting(db.LOCK_TIMEOUT_MS, minimum=100)
    # The importer and the token endpoint.
    max_photo_bytes: int = setting(MAX_PHOTO_BYTES, minimum=1)
    auth_max_failures: int = setting(10, minimum=1)
    auth_max_failures_per_address: int = setting(30, minimum=1)
    auth_window: int = setting(300, minimum=1)
    trusted_proxies: int = 0

    def __repr__(self) -> str:  # keeps secrets out of logs and tracebacks
        return (f"HOSettings(database_url=<hidden>, s3_endpoint={self.s3_endpoint!r}, "
                f"s3_bucket={self.s3_bucket!r})")

    @property
    def worker_count(self) -> int:
        """gunicorn workers: the setting, or min(4, 2 x CPUs) when it is 0 or unset."""
        return self.workers or _default_workers()

    def require_s3(self) -> "HOSettings":
        """These settings, or ConfigError naming the first S3 setting that is missing."""
        for name, value in (("S3_ENDPOINT", self.s3_endpoint),
                            ("S3_ACCESS_KEY", self.s3_access_key),
                            ("S3_SECRET_KEY", self.s3_secret_key)):
            if not value:
                raise ConfigError(f"{PREFIX}{name} is not set (this command uses the photo "
                                  "store, S3): set it in the environment or in the file given "
                                  "with --config")
        return self

    @classmethod
    def load(cls, config_file: str | None = None, environ=None, need_jwt: bool = True,
             overrides: dict | None = None, need_s3: bool = True,
             need_database: bool = True) -> "HOSettings":
        """Read and check the settings; ConfigError names the first one that is wrong.

        `config_file` defaults to `PHOTO_SYNC_HO_CONFIG`; `overrides` (names without the
        prefix) win over both, as `create_app(test_config)` needs."""
        env = os.environ if environ is None else environ
        if config_file is None:
            config_file = env.get(PREFIX + "CONFIG") or None
        s = Settings(PREFIX, config_file, env, overrides)
        jwt_secret = s.get("JWT_SECRET", "")
        if need_jwt and len(jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            raise ConfigError(
                f"{PREFIX}JWT_SECRET must be set to at least {MIN_JWT_SECRET_BYTES} random "
                "bytes (e.g. `openssl rand -hex 32`); refusing to start with a weak key")
        settings = cls(**read_fields(cls, s, ("database_url",) if need_database else ()))
        return settings.require_s3() if need_s3 else settings

    def connect_kwargs(self) -> dict:
        """`psycopg.connect` / pool keyword arguments with this HO's session timeouts."""
        return db.connect_kwargs(self.statement_timeout_ms, self.lock_timeout_ms)
