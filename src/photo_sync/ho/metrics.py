"""HO metrics for Prometheus: what the API did, and where every store stands.

Two sources, one endpoint (docs/metrics.md lists every series):

- **Request series** (requests, latency, downloads, token failures, backend errors) are
  counted in the gunicorn workers with prometheus_client's multiprocess mode: each worker
  writes its samples to files in `PROMETHEUS_MULTIPROC_DIR`, and a scrape sums them. The
  folder must be empty when gunicorn starts (gunicorn_conf.py wipes it; the unit's
  RuntimeDirectory is new at every start), or a restart would add the last run's counts.
- **Catalog series** (per store, and the catalog's size and last change) are computed at
  scrape time in the gunicorn master, from one SQL statement (`FLEET_SQL`) on a connection
  opened for that scrape: the number of statements does not grow with the number of
  stores, nothing is cached between scrapes, and nothing is kept open across the worker
  forks. The figures are what the stores reported to HO, so a store behind NAT that HO
  cannot reach is covered like any other.

The endpoint is served by the master on its own address (`PHOTO_SYNC_HO_METRICS_BIND`,
default loopback), never on the API's: the gateway forwards only the API's address, so no
store can reach it. Labels hold store ids (UUIDs, not secrets), endpoint names, statuses
and fixed reasons; never a photo id, a token or a secret.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

# Label values known in advance, created at 0 in every worker so rate() and the dashboard
# have a series before the first event.
DOWNLOAD_PATHS = ("stream", "accel", "presigned")
TOKEN_FAILURE_REASONS = ("invalid_credentials", "too_many_failures", "missing", "invalid",
                         "expired", "unknown_store", "revoked")
BACKENDS = ("catalog", "s3")

REQUESTS = Counter("photo_sync_ho_requests", "API requests answered, by endpoint and status",
                   ["endpoint", "status"])
REQUEST_SECONDS = Histogram(
    "photo_sync_ho_request_seconds",
    "Seconds from a request's arrival to its answer's headers (a streamed body is not timed)",
    ["endpoint"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
DOWNLOADS = Counter("photo_sync_ho_downloads",
                    "Photo downloads handed out, by path: stream (bytes through the API), "
                    "accel (X-Accel-Redirect to the gateway), presigned (S3 URLs in listings)",
                    ["path"])
DOWNLOAD_BYTES = Counter("photo_sync_ho_download_bytes",
                         "Catalog size of the photos handed out, by path", ["path"])
TOKEN_FAILURES = Counter("photo_sync_ho_token_failures",
                         "Refused token requests and bearer tokens, by reason", ["reason"])
BACKEND_ERRORS = Counter("photo_sync_ho_backend_errors",
                         "Requests answered 503 because the catalog or S3 failed", ["backend"])

# Error codes of photo_sync.ho.errors that mean a backend failed.
_BACKEND_OF_ERROR = {"catalog_unavailable": "catalog", "catalog_busy": "catalog",
                     "catalog_read_only": "catalog", "catalog_not_ready": "catalog",
                     "storage_unavailable": "s3", "storage_refused": "s3"}


def downloaded(path: str, size: int | None) -> None:
    """Count one photo handed out by `path` (DOWNLOAD_PATHS), `size` catalog bytes."""
    DOWNLOADS.labels(path).inc()
    if size:
        DOWNLOAD_BYTES.labels(path).inc(size)


def init_app(app) -> None:
    """Time and count every request of `app`; the answers themselves are unchanged."""
    from flask import g, request

    for path in DOWNLOAD_PATHS:
        DOWNLOADS.labels(path)
        DOWNLOAD_BYTES.labels(path)
    for reason in TOKEN_FAILURE_REASONS:
        TOKEN_FAILURES.labels(reason)
    for backend in BACKENDS:
        BACKEND_ERRORS.labels(backend)

    @app.before_request
    def _started():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response):
        # The view's name, never its path: a path holds photo ids.
        endpoint = request.endpoint or "unmatched"
        REQUESTS.labels(endpoint, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - started)
        status = response.status_code
        reason = g.get("token_failure")  # set by photo_sync.ho.auth on a refused bearer token
        if endpoint == "api_v1.token" and status in (401, 429):
            reason = "invalid_credentials" if status == 401 else "too_many_failures"
        if reason and status in (401, 429):
            TOKEN_FAILURES.labels(reason).inc()
        if status == 503 and response.is_json:
            # The error handlers' code (photo_sync.ho.errors) says which backend failed.
            body = response.get_json(silent=True)
            backend = _BACKEND_OF_ERROR.get(body.get("error")) if isinstance(body, dict) else None
            if backend:
                BACKEND_ERRORS.labels(backend).inc()
        return response


# The catalog side ------------------------------------------------------------------------

# One statement for the whole fleet. Per store, as `photo-sync-ho fleet` counts them
# (photo_sync.ho.fleet): synced = live photos reported synced at their current version,
# failed = live photos reported failed, deletions pending = tombstones of photos it still
# reports holding. The lag is the age of the oldest change it has not reported synced;
# `fleet` asks for it store by store, here it is found for every store in one pass: rank
# the live photos by (updated_at, id); a store's synced photos, in rank order, are numbered
# 1, 2, ...; the first whose rank is not its number marks the first rank the store lacks
# (or, with no gap, the rank after its last), and that photo is its oldest unsynced change.
FLEET_SQL = """
WITH live AS (
    SELECT id, version, updated_at, row_number() OVER (ORDER BY updated_at, id) AS rank
      FROM product_photo WHERE deleted_at IS NULL),
totals AS (
    SELECT (SELECT count(*) FROM live) AS catalog_photos,
           (SELECT extract(epoch FROM max(greatest(updated_at, deleted_at)))
              FROM product_photo) AS last_change,
           extract(epoch FROM now()) AS now),
synced AS (
    SELECT st.store_id, l.rank,
           row_number() OVER (PARTITION BY st.store_id ORDER BY l.rank) AS n
      FROM photo_sync_status st JOIN live l ON l.id = st.photo_id
     WHERE st.status = 'synced' AND st.version >= l.version),
gaps AS (
    SELECT store_id, count(*) AS synced,
           coalesce(min(n) FILTER (WHERE rank <> n), count(*) + 1) AS first_missing
      FROM synced GROUP BY store_id),
reports AS (
    SELECT st.store_id, extract(epoch FROM max(st.reported_at)) AS last_report,
           count(p.id) FILTER (WHERE st.status = 'failed' AND p.deleted_at IS NULL) AS failed,
           count(*) FILTER (WHERE p.deleted_at IS NOT NULL AND st.status <> 'deleted')
               AS deletions_pending,
           min(p.deleted_at) FILTER (WHERE p.deleted_at IS NOT NULL AND st.status <> 'deleted')
               AS oldest_deletion
      FROM photo_sync_status st LEFT JOIN product_photo p ON p.id = st.photo_id
     GROUP BY st.store_id)
SELECT t.catalog_photos, t.last_change, t.now, s.id AS store_id, s.name, s.active,
       r.last_report, coalesce(g.synced, 0) AS synced, coalesce(r.failed, 0) AS failed,
       coalesce(r.deletions_pending, 0) AS deletions_pending,
       extract(epoch FROM least(missing.updated_at, r.oldest_deletion)) AS oldest_unsynced
  FROM totals t
  LEFT JOIN sync_store s ON true
  LEFT JOIN gaps g ON g.store_id = s.id
  LEFT JOIN reports r ON r.store_id = s.id
  LEFT JOIN live missing ON missing.rank = coalesce(g.first_missing, 1)
 ORDER BY s.id
"""


def fleet_figures(conn) -> dict:
    """The catalog series as plain numbers: {"catalog_photos", "last_change", "stores":
    {store id: {...}}}, from FLEET_SQL in one read-only snapshot."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        rows = conn.execute(FLEET_SQL).fetchall()
    first = rows[0]
    catalog_photos = int(first["catalog_photos"])
    now = float(first["now"])
    stores = {}
    for row in rows:
        if row["store_id"] is None:  # no store registered: the totals row alone
            continue
        synced, failed = int(row["synced"]), int(row["failed"])
        oldest = row["oldest_unsynced"]
        stores[str(row["store_id"])] = {
            "name": row["name"],
            "enabled": bool(row["active"]),
            "last_report": float(row["last_report"]) if row["last_report"] is not None else 0.0,
            "synced": synced,
            "failed": failed,
            "pending": max(0, catalog_photos - synced - failed),
            "deletions_pending": int(row["deletions_pending"]),
            "lag_seconds": round(max(0.0, now - float(oldest)), 1) if oldest is not None
            else 0.0,
        }
    last_change = first["last_change"]
    return {"catalog_photos": catalog_photos,
            "last_change": float(last_change) if last_change is not None else 0.0,
            "stores": stores}


class CatalogCollector:
    """The per-store and catalog series, read from the catalog at every scrape.

    `connect()` opens a catalog connection (closed after the scrape); `check_storage()`
    raises when S3 does not answer. A catalog that cannot be read yields
    photo_sync_ho_catalog_up 0 and no per-store series (a gap, never stale figures)."""

    def __init__(self, connect, check_storage=None):
        self._connect = connect
        self._check_storage = check_storage

    def collect(self):
        catalog_up = GaugeMetricFamily("photo_sync_ho_catalog_up",
                                       "1 when this scrape could read the HO catalog")
        figures = None
        try:
            with self._connect() as conn:
                figures = fleet_figures(conn)
        except Exception as exc:  # any failure is "down"; the log says which
            log.warning("metrics: cannot read the catalog: %s", type(exc).__name__)
        catalog_up.add_metric([], 1 if figures is not None else 0)
        yield catalog_up
        if self._check_storage is not None:
            storage_up = GaugeMetricFamily("photo_sync_ho_storage_up",
                                           "1 when this scrape found the S3 bucket answering")
            try:
                self._check_storage()
                storage_up.add_metric([], 1)
            except Exception as exc:
                log.warning("metrics: S3 does not answer: %s", type(exc).__name__)
                storage_up.add_metric([], 0)
            yield storage_up
        if figures is None:
            return
        yield from catalog_families(figures)


def catalog_families(figures: dict):
    """The GaugeMetricFamily objects of `fleet_figures`' result."""
    photos = GaugeMetricFamily("photo_sync_ho_catalog_photos", "Live photos in the catalog")
    photos.add_metric([], figures["catalog_photos"])
    change = GaugeMetricFamily("photo_sync_ho_catalog_last_change_timestamp_seconds",
                               "Time of the catalog's newest change (import, update or delete)")
    change.add_metric([], figures["last_change"])
    families = {
        "last_report": GaugeMetricFamily(
            "photo_sync_ho_store_last_report_timestamp_seconds",
            "Time of the store's newest status report; 0 when it never reported", labels=["store"]),
        "lag_seconds": GaugeMetricFamily(
            "photo_sync_ho_store_lag_seconds",
            "Age of the oldest catalog change the store has not reported synced",
            labels=["store"]),
        "deletions_pending": GaugeMetricFamily(
            "photo_sync_ho_store_deletions_pending",
            "Deleted photos the store still reports holding", labels=["store"]),
        "enabled": GaugeMetricFamily("photo_sync_ho_store_enabled",
                                     "1 when the store may sync, 0 when disabled at HO",
                                     labels=["store"]),
    }
    states = GaugeMetricFamily("photo_sync_ho_store_photos",
                               "Live catalog photos by the store's reported state",
                               labels=["store", "state"])
    info = GaugeMetricFamily("photo_sync_ho_store_info", "The store's name at HO (always 1)",
                             labels=["store", "name"])
    for store_id, store in figures["stores"].items():
        for key, family in families.items():
            family.add_metric([store_id], float(store[key]))
        for state in ("synced", "failed", "pending"):
            states.add_metric([store_id, state], store[state])
        info.add_metric([store_id, store["name"] or ""], 1)
    yield photos
    yield change
    yield from families.values()
    yield states
    yield info


def registry(connect=None, check_storage=None) -> CollectorRegistry:
    """The registry a scrape reads: every worker's files, and the catalog when `connect`."""
    from prometheus_client import multiprocess

    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)
    if connect is not None:
        reg.register(CatalogCollector(connect, check_storage))
    return reg


def serve(bind: str, reg: CollectorRegistry) -> threading.Thread | None:
    """Serve `reg` at http://BIND/metrics from a daemon thread; None (logged) when the
    address cannot be bound: the API keeps serving without its metrics."""
    from prometheus_client import start_http_server

    host, _, port = bind.rpartition(":")
    try:
        server, thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1",
                                           registry=reg)
    except OSError as exc:
        log.error("metrics: cannot listen on %s (%s): check PHOTO_SYNC_HO_METRICS_BIND",
                  bind, exc.strerror)
        return None
    log.info("metrics: serving http://%s/metrics", bind)
    return thread
