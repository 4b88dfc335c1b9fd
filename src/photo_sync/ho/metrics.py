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

log = logging.getLogger(__name__)

# Label values known in advance, created at 0 in every worker so rate() and the dashboard
# have a series before the first event.
DOWNLOAD_PATHS = ("stream", "accel", "presigned", "signed")
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
# `fleet` asks for it store by store, here it is found for every store at once, without
# sorting the reports (a sort of every report was most of a scrape's cost): rank the live
# photos by (updated_at, id); per store and block of 62 ranks, a bitmask of the ranks it
# has synced (hash aggregation). The store's first missing rank is in its first block that
# is absent or not full, at that block's lowest zero bit; that photo is its oldest unsynced
# change. Ranks past the catalog's end count as missing, so a store with everything has
# its first missing rank after the last one, and no live gap.
_BLOCK = 62  # bits per mask: (mask + 1) must stay within a bigint
FLEET_SQL = """
WITH live AS (
    SELECT id, version, updated_at, row_number() OVER (ORDER BY updated_at, id) AS rank
      FROM product_photo WHERE deleted_at IS NULL),
totals AS (
    SELECT (SELECT count(*) FROM live) AS catalog_photos,
           (SELECT extract(epoch FROM max(greatest(updated_at, deleted_at)))
              FROM product_photo) AS last_change,
           extract(epoch FROM now()) AS now),
blocks AS (
    SELECT st.store_id, (l.rank - 1) / {block} AS block, count(*) AS n,
           bit_or(1::bigint << ((l.rank - 1) % {block})::int) AS mask
      FROM photo_sync_status st JOIN live l ON l.id = st.photo_id
     WHERE st.status = 'synced' AND st.version >= l.version
     GROUP BY st.store_id, (l.rank - 1) / {block}),
numbered AS (
    SELECT store_id, block, n, mask,
           row_number() OVER (PARTITION BY store_id ORDER BY block) - 1 AS expected
      FROM blocks),
gaps AS (
    SELECT store_id, sum(n) AS synced,
           coalesce(min(CASE
               WHEN block <> expected THEN expected * {block} + 1
               WHEN mask <> {full} THEN block * {block} + 1 + round(log(2::numeric,
                    ((~mask) & (mask + 1))::numeric))::bigint
           END), (max(block) + 1) * {block} + 1) AS first_missing
      FROM numbered GROUP BY store_id),
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
""".format(block=_BLOCK, full=2**_BLOCK - 1)


def fleet_figures(conn) -> dict:
    """The catalog series as plain numbers: {"catalog_photos", "last_change", "stores":
    {store id: {...}}}, from FLEET_SQL in one read-only snapshot."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        # The gap search sorts every synced report: in memory, not in temporary files.
        conn.execute("SET LOCAL work_mem = '64MB'")
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


def _escape(value: str) -> str:
    """A label value as the text format writes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# (name, figure, help) of the one-label-per-store gauges, in the order they are written.
_STORE_GAUGES = (
    ("photo_sync_ho_store_last_report_timestamp_seconds", "last_report",
     "Time of the store's newest status report; 0 when it never reported"),
    ("photo_sync_ho_store_lag_seconds", "lag_seconds",
     "Age of the oldest catalog change the store has not reported synced"),
    ("photo_sync_ho_store_deletions_pending", "deletions_pending",
     "Deleted photos the store still reports holding"),
    ("photo_sync_ho_store_enabled", "enabled", "1 when the store may sync, 0 when disabled at HO"),
)


def catalog_text(figures: dict | None, storage_up: bool | None = None) -> str:
    """The catalog series in the Prometheus text format, from `fleet_figures`' result (None:
    the catalog could not be read, so only photo_sync_ho_catalog_up 0).

    Written directly rather than through prometheus_client's metric objects: with 2000
    stores that is some 18,000 samples, and building an object per sample cost more than
    the catalog statement (bench/ho_metrics.py)."""
    lines = ["# HELP photo_sync_ho_catalog_up 1 when this scrape could read the HO catalog",
             "# TYPE photo_sync_ho_catalog_up gauge",
             f"photo_sync_ho_catalog_up {0 if figures is None else 1}"]
    if storage_up is not None:
        lines += ["# HELP photo_sync_ho_storage_up 1 when this scrape found the S3 bucket "
                  "answering", "# TYPE photo_sync_ho_storage_up gauge",
                  f"photo_sync_ho_storage_up {int(storage_up)}"]
    if figures is None:
        return "\n".join(lines) + "\n"
    lines += ["# HELP photo_sync_ho_catalog_photos Live photos in the catalog",
              "# TYPE photo_sync_ho_catalog_photos gauge",
              f"photo_sync_ho_catalog_photos {figures['catalog_photos']}",
              "# HELP photo_sync_ho_catalog_last_change_timestamp_seconds Time of the "
              "catalog's newest change (import, update or delete)",
              "# TYPE photo_sync_ho_catalog_last_change_timestamp_seconds gauge",
              f"photo_sync_ho_catalog_last_change_timestamp_seconds {figures['last_change']!r}"]
    stores = figures["stores"]
    # Store ids are UUIDs (catalog type uuid): nothing in them to escape.
    for name, key, text in _STORE_GAUGES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        lines += [f'{name}{{store="{sid}"}} {float(s[key])!r}' for sid, s in stores.items()]
    name = "photo_sync_ho_store_photos"
    lines += [f"# HELP {name} Live catalog photos by the store's reported state",
              f"# TYPE {name} gauge"]
    for state in ("synced", "failed", "pending"):
        lines += [f'{name}{{store="{sid}",state="{state}"}} {s[state]}'
                  for sid, s in stores.items()]
    name = "photo_sync_ho_store_info"
    lines += [f"# HELP {name} The store's name at HO (always 1)", f"# TYPE {name} gauge"]
    lines += [f'{name}{{store="{sid}",name="{_escape(s["name"] or "")}"}} 1'
              for sid, s in stores.items()]
    return "\n".join(lines) + "\n"


class Exporter:
    """What a scrape answers: every worker's counters (their multiprocess files), then the
    catalog series read now.

    `connect()` opens a catalog connection (closed after the scrape); `check_storage()`
    raises when S3 does not answer. A catalog that cannot be read yields
    photo_sync_ho_catalog_up 0 and no per-store series (a gap, never stale figures)."""

    def __init__(self, connect=None, check_storage=None):
        from prometheus_client import multiprocess

        self._connect = connect
        self._check_storage = check_storage
        self._workers = CollectorRegistry()
        multiprocess.MultiProcessCollector(self._workers)

    def catalog(self) -> str:
        if self._connect is None:
            return ""
        figures = None
        try:
            with self._connect() as conn:
                figures = fleet_figures(conn)
        except Exception as exc:  # any failure is "down"; the log says which
            log.warning("metrics: cannot read the catalog: %s", type(exc).__name__)
        storage_up = None
        if self._check_storage is not None:
            try:
                self._check_storage()
                storage_up = True
            except Exception as exc:
                log.warning("metrics: S3 does not answer: %s", type(exc).__name__)
                storage_up = False
        return catalog_text(figures, storage_up)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self._workers) + self.catalog().encode()

    def wsgi(self, environ, start_response):
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"the metrics are at /metrics\n"]
        body = self.render()
        start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                                  ("Content-Length", str(len(body)))])
        return [body]


def serve(bind: str, exporter: Exporter) -> threading.Thread | None:
    """Serve `exporter` at http://BIND/metrics from a daemon thread; None (logged) when the
    address cannot be bound: the API keeps serving without its metrics."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):  # gunicorn's log is for the API's requests
            pass

    host, _, port = bind.rpartition(":")
    if host.startswith("["):
        import socket
        Server.address_family = socket.AF_INET6
    try:
        httpd = make_server(host.strip("[]"), int(port), exporter.wsgi, Server, Quiet)
    except OSError as exc:
        log.error("metrics: cannot listen on %s (%s): check PHOTO_SYNC_HO_METRICS_BIND",
                  bind, exc.strerror)
        return None
    thread = threading.Thread(target=httpd.serve_forever, name="photo-sync-metrics",
                              daemon=True)
    thread.start()
    log.info("metrics: serving http://%s/metrics", bind)
    return thread
