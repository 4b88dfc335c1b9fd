"""Typed HO settings from the environment (or --config); refuses to run without a real key."""

from __future__ import annotations

from dataclasses import dataclass

from photo_sync.config import ConfigError, Settings

PREFIX = "PHOTO_SYNC_HO_"
MIN_JWT_SECRET_BYTES = 32


@dataclass(frozen=True)
class HOSettings:
    database_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str = ""
    s3_bucket: str = "product-photos"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    jwt_secret: str = ""
    token_ttl: int = 3600
    public_image_base: str = ""
    max_downloads_per_store: int = 16
    presigned_downloads: bool = False
    s3_public_endpoint: str = ""
    presign_ttl: int = 900

    def __repr__(self) -> str:  # keeps secrets out of logs and tracebacks
        return (f"HOSettings(database_url=<hidden>, s3_endpoint={self.s3_endpoint!r}, "
                f"s3_bucket={self.s3_bucket!r})")

    @classmethod
    def load(cls, config_file: str | None = None, environ=None, need_jwt: bool = True,
             overrides: dict | None = None) -> "HOSettings":
        s = Settings(PREFIX, config_file, environ, overrides)
        jwt_secret = s.get("JWT_SECRET", "")
        if need_jwt and len(jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            raise ConfigError(
                f"{PREFIX}JWT_SECRET must be set to at least {MIN_JWT_SECRET_BYTES} random "
                "bytes (e.g. `openssl rand -hex 32`); refusing to start with a weak key")
        return cls(
            database_url=s.require("DATABASE_URL", "the HO catalog, a libpq URL"),
            s3_endpoint=s.require("S3_ENDPOINT", "host:port of the MinIO/S3 server"),
            s3_access_key=s.require("S3_ACCESS_KEY"),
            s3_secret_key=s.require("S3_SECRET_KEY"),
            s3_bucket=s.get("S3_BUCKET", "product-photos"),
            s3_secure=s.get_bool("S3_SECURE", False),
            s3_region=s.get("S3_REGION", "us-east-1"),
            jwt_secret=jwt_secret,
            token_ttl=s.get_int("TOKEN_TTL", 3600, minimum=60),
            public_image_base=s.get("PUBLIC_IMAGE_BASE", ""),
            max_downloads_per_store=s.get_int("MAX_DOWNLOADS_PER_STORE", 16, minimum=1),
            presigned_downloads=s.get_bool("PRESIGNED_DOWNLOADS", False),
            s3_public_endpoint=s.get("S3_PUBLIC_ENDPOINT", ""),
            presign_ttl=s.get_int("PRESIGN_TTL", 900, minimum=60),
        )
