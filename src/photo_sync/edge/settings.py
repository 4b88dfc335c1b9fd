"""Typed edge settings from PHOTO_SYNC_EDGE_* (environment or --config file).

Transport rules enforced here, before anything connects: HO (and the S3 origin of
presigned URLs) is reached over https unless the host is this machine (loopback) or the
operator set PHOTO_SYNC_EDGE_ALLOW_HTTP=true; a CA bundle must be a readable PEM file.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from dataclasses import dataclass

from photo_sync.config import ConfigError, Settings
from photo_sync.protocol import parse_uuid

PREFIX = "PHOTO_SYNC_EDGE_"
DEFAULT_MAX_PHOTO_BYTES = 50 * 1024 * 1024
DEFAULT_MIN_RATE = 16 * 1024


@dataclass(frozen=True)
class EdgeSettings:
    """The agent's settings, typed and checked (PHOTO_SYNC_EDGE_*; see the README's table)."""
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
    # Fetch bytes from S3 when HO offers presigned URLs; only ever true together with a
    # presigned_origin (load() switches it off without one).
    presigned: bool = True
    max_photo_bytes: int = DEFAULT_MAX_PHOTO_BYTES
    min_rate: int = DEFAULT_MIN_RATE  # bytes per second a download must keep up
    ca_bundle: str = ""  # PEM file of the CA that signed HO's certificate ("" = system CAs)
    allow_http: bool = False  # http:// to a host that is not loopback
    presigned_origin: str = ""  # scheme://host:port presigned URLs must point at
    lock_timeout: float = 15.0  # seconds a statement waits for a row lock held elsewhere

    def __repr__(self) -> str:  # keeps the secret and the DB URL out of logs
        return (f"EdgeSettings(ho_url={self.ho_url!r}, store_id={self.store_id!r}, "
                f"concurrency={self.concurrency})")

    @classmethod
    def load(cls, config_file: str | None = None, environ=None, overrides: dict | None = None,
             need_ho: bool = True) -> "EdgeSettings":
        """Settings from `config_file`, the environment and `overrides` (which win, in that order);
        ConfigError naming what is wrong. `need_ho=False` for commands that only touch the
        database."""
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
        allow_http = s.get_bool("ALLOW_HTTP", False)
        if ho_url:
            _require_tls("HO_URL", ho_url, allow_http)
        presigned_origin = _origin_setting(s.get("PRESIGNED_ORIGIN", ""), allow_http)
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
            presigned=s.get_bool("PRESIGNED", True) and bool(presigned_origin),
            max_photo_bytes=s.get_int("MAX_PHOTO_BYTES", DEFAULT_MAX_PHOTO_BYTES, minimum=1),
            min_rate=s.get_int("MIN_RATE", DEFAULT_MIN_RATE, minimum=1),
            ca_bundle=_ca_bundle(s.get("CA_BUNDLE", "")),
            allow_http=allow_http,
            presigned_origin=presigned_origin,
            lock_timeout=s.get_float("LOCK_TIMEOUT", 15.0, minimum=0.1),
        )


def is_loopback(host: str | None) -> bool:
    """True for a host name or address that can only mean this machine."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, the port filled in from the scheme; ValueError when
    the URL has no http(s) scheme or no host."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    port = parts.port or (443 if scheme == "https" else 80)  # .port raises on a bad port
    return scheme, parts.hostname.lower(), port


def _require_tls(name: str, url: str, allow_http: bool) -> None:
    # Without TLS the store's secret, its token and every photo cross the WAN readable
    # and changeable by anyone on the path; loopback never leaves the machine.
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() == "http" and not allow_http and not is_loopback(parts.hostname):
        raise ConfigError(
            f"{PREFIX}{name}={url!r} uses http:// to a host that is not this machine, so "
            "credentials and photos would cross the network unencrypted: use https:// (with "
            f"{PREFIX}CA_BUNDLE for a private CA), or set {PREFIX}ALLOW_HTTP=true to accept that")


def _origin_setting(raw: str, allow_http: bool) -> str:
    if not raw:
        return ""
    raw = raw.strip().rstrip("/")
    try:
        scheme, host, port = origin_of(raw)
        extra = urllib.parse.urlsplit(raw)
        if extra.path or extra.query or extra.fragment or extra.username:
            raise ValueError("more than scheme, host and port")
    except ValueError:
        raise ConfigError(f"{PREFIX}PRESIGNED_ORIGIN={raw!r} is not an origin: give the S3 "
                          "endpoint HO presigns for as scheme://host:port, e.g. "
                          "https://s3.example:9000") from None
    _require_tls("PRESIGNED_ORIGIN", raw, allow_http)
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


def _ca_bundle(path: str) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as pem:
            head = pem.read(1024 * 1024)
    except OSError as exc:
        raise ConfigError(f"{PREFIX}CA_BUNDLE={path!r} cannot be read ({exc.strerror}): give "
                          "the path of the PEM file of the CA that signed HO's certificate, "
                          "readable by the agent's user") from None
    if b"-----BEGIN CERTIFICATE-----" not in head:
        raise ConfigError(f"{PREFIX}CA_BUNDLE={path!r} holds no PEM certificate (no "
                          "'-----BEGIN CERTIFICATE-----' line): give the CA certificate of HO "
                          "in PEM form")
    return os.path.abspath(path)
