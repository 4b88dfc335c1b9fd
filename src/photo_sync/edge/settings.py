"""Typed edge settings from PHOTO_SYNC_EDGE_* (environment or --config file)."""

from __future__ import annotations

from dataclasses import dataclass

from photo_sync.config import ConfigError, Settings
from photo_sync.protocol import parse_uuid

PREFIX = "PHOTO_SYNC_EDGE_"


@dataclass(frozen=True)
class EdgeSettings:
    database_url: str
    ho_url: str = ""
    store_id: str = ""
    store_secret: str = ""
    concurrency: int = 8
    bandwidth_limit: int = 0  # bytes per second, 0 = no cap
    max_delete_fraction: float = 0.25
    metrics_file: str = ""
    timeout: float = 60.0
    retries: int = 5
    page_size: int = 500
    table: str = "product_photo"
    presigned: bool = True  # fetch bytes from S3 when HO offers presigned URLs
    lock_timeout: float = 15.0  # seconds a statement waits for a row lock held elsewhere

    def __repr__(self) -> str:  # keeps the secret and the DB URL out of logs
        return (f"EdgeSettings(ho_url={self.ho_url!r}, store_id={self.store_id!r}, "
                f"concurrency={self.concurrency})")

    @classmethod
    def load(cls, config_file: str | None = None, environ=None, overrides: dict | None = None,
             need_ho: bool = True) -> "EdgeSettings":
        s = Settings(PREFIX, config_file, environ, overrides)
        store_id = s.get("STORE_ID", "")
        if need_ho:
            store_id = s.require("STORE_ID", "this store's UUID as registered at HO")
            try:
                store_id = str(parse_uuid(store_id))
            except ValueError:
                raise ConfigError(f"{PREFIX}STORE_ID={store_id!r} is not a UUID") from None
            s.require("HO_URL", "e.g. https://ho.example:8443")
            s.require("STORE_SECRET", "the secret HO printed when the store was added")
        ho_url = s.get("HO_URL", "").rstrip("/")
        if ho_url and not ho_url.startswith(("http://", "https://")):
            raise ConfigError(f"{PREFIX}HO_URL={ho_url!r} must start with http:// or https://")
        return cls(
            database_url=s.require("DATABASE_URL", "the store's PostgreSQL, a libpq URL"),
            ho_url=ho_url,
            store_id=store_id,
            store_secret=s.get("STORE_SECRET", ""),
            concurrency=s.get_int("CONCURRENCY", 8, minimum=1),
            bandwidth_limit=s.get_int("BANDWIDTH_LIMIT", 0, minimum=0),
            max_delete_fraction=s.get_float("MAX_DELETE_FRACTION", 0.25, 0.0, 1.0),
            metrics_file=s.get("METRICS_FILE", ""),
            timeout=s.get_float("TIMEOUT", 60.0, minimum=1.0),
            retries=s.get_int("RETRIES", 5, minimum=0),
            page_size=s.get_int("PAGE_SIZE", 500, minimum=1),
            table=s.get("TABLE", "product_photo"),
            presigned=s.get_bool("PRESIGNED", True),
            lock_timeout=s.get_float("LOCK_TIMEOUT", 15.0, minimum=0.1),
        )
