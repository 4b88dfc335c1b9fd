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

from photo_sync.config import ConfigError, Settings, read_fields, setting
from photo_sync.edge import bandwidth
from photo_sync.edge.bandwidth import NO_CAP, Timetable
from photo_sync.protocol import parse_uuid

PREFIX = "PHOTO_SYNC_EDGE_"
DEFAULT_MAX_PHOTO_BYTES = 50 * 1024 * 1024
DEFAULT_MIN_RATE = 16 * 1024


def _ho_url(raw: str) -> str:
    # One URL, or the gateways of a pair (or more) separated by commas: the agent keeps to
    # the first that answers and moves on when it stops (HOClient, docs/runbook-failover.md).
    urls = [part.strip().rstrip("/") for part in raw.split(",")]
    if raw.strip() and not all(urls):
        raise ConfigError(f"{PREFIX}HO_URL={raw!r} has an empty entry: give one URL, or "
                          "several separated by commas")
    for url in urls:
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"{PREFIX}HO_URL={url!r} must start with http:// or https://")
    return ",".join(urls)


def ho_urls(ho_url: str) -> list[str]:
    """The URLs of a PHOTO_SYNC_EDGE_HO_URL setting (one, or several separated by commas)."""
    return [url for url in ho_url.split(",") if url]


@dataclass(frozen=True)
class EdgeSettings:
    """The agent's settings, typed and checked (PHOTO_SYNC_EDGE_*; see the README's table).

    Each field is read from PHOTO_SYNC_EDGE_<FIELD NAME> by `load` (`config.read_fields`):
    its default, bounds and check are written here, once."""
    database_url: str = setting(hint="the store's PostgreSQL, a libpq URL")
    # one URL or several, comma-separated (a gateway pair)
    ho_url: str = setting("", parse=_ho_url, hint="e.g. https://ho.example:8443")
    store_id: str = setting("", hint="this store's UUID as registered at HO")
    store_secret: str = setting("", hint="the secret HO printed when the store was added")
    concurrency: int = setting(8, minimum=1)
    # bytes per second (0 = no cap) or a timetable by local time of day: edge/bandwidth.py
    bandwidth_limit: Timetable = setting(NO_CAP, parse=lambda raw: bandwidth.parse(raw))
    max_delete_fraction: float = setting(0.25, minimum=0.0, maximum=1.0)
    metrics_file: str = ""
    timeout: float = setting(60.0, minimum=1.0)
    retries: int = 5
    page_size: int = setting(500, minimum=1)
    table: str = "product_photo"
    # Fetch bytes from S3 when HO offers presigned URLs; only ever true together with a
    # presigned_origin (load() switches it off without one).
    presigned: bool = True
    max_photo_bytes: int = setting(DEFAULT_MAX_PHOTO_BYTES, minimum=1)
    # bytes per second a download must keep up
    min_rate: int = setting(DEFAULT_MIN_RATE, minimum=1)
    # PEM file of the CA that signed HO's certificate ("" = system CAs)
    ca_bundle: str = setting("", parse=lambda path: _ca_bundle(path))
    allow_http: bool = False  # http:// to a host that is not loopback
    presigned_origin: str = ""  # scheme://host:port presigned URLs must point at
    # seconds a statement waits for a row lock held elsewhere
    lock_timeout: float = setting(15.0, minimum=0.1)
    # The photo mirror the agent keeps after each run for the photo server (edge/mirror.py):
    # its folder ("" = none), its byte budget, and the free space it leaves on its disk.
    serve_cache_dir: str = ""
    serve_cache_max_bytes: int = setting(1024**3, minimum=1)
    serve_cache_min_free_bytes: int = setting(2 * 1024**3)

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
        values = read_fields(cls, s, ("store_id", "ho_url", "store_secret") if need_ho else ())
        if need_ho:
            try:
                values["store_id"] = str(parse_uuid(values["store_id"]))
            except ValueError:
                raise ConfigError(f"{PREFIX}STORE_ID={values['store_id']!r} is not a UUID"
                                  ) from None
        for url in ho_urls(values["ho_url"]):
            _require_tls("HO_URL", url, values["allow_http"])
        values["presigned_origin"] = _origin_setting(values["presigned_origin"],
                                                     values["allow_http"])
        values["presigned"] = values["presigned"] and bool(values["presigned_origin"])
        return cls(**values)


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
