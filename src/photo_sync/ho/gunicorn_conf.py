"""gunicorn settings for the HO sync API: `gunicorn -c python:photo_sync.ho.gunicorn_conf ...`.

Threads (gthread) keep a slow store's streaming download from holding a whole
worker, and the timeout only fires for a worker that stops heartbeating, not
for a long download. Bind, workers, threads and the log level come from
`HOSettings` (PHOTO_SYNC_HO_BIND, _WORKERS, _THREADS, _LOG_LEVEL), like every
other HO setting; the catalog, S3 and the key are checked by the app itself.

Metrics (photo_sync.ho.metrics): the workers count into PROMETHEUS_MULTIPROC_DIR (the
unit's runtime folder; a private temporary folder when it is unset), emptied when the
master starts, and the master serves the sum, with the catalog's per-store figures, on
PHOTO_SYNC_HO_METRICS_BIND (off: no endpoint).
"""

import os
import shutil
import tempfile
from pathlib import Path

from photo_sync.ho.settings import HOSettings

_settings = HOSettings.load(need_jwt=False, need_s3=False, need_database=False)

# Before anything imports prometheus_client: it picks its multiprocess value files at import.
_own_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _own_metrics_dir = tempfile.mkdtemp(prefix="photo-sync-ho-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir

bind = _settings.bind
workers = _settings.worker_count
worker_class = "gthread"
threads = _settings.threads
timeout = 60
graceful_timeout = 30
keepalive = 30
max_requests = 10000
max_requests_jitter = 1000
accesslog = "-"
errorlog = "-"
loglevel = _settings.log_level
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms'


def on_starting(server):
    """Empty the metrics folder: counts left by an earlier run would be added to this one's."""
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.glob("*.db"):
        path.unlink()


def when_ready(server):
    """Serve the metrics from the master, once, on PHOTO_SYNC_HO_METRICS_BIND."""
    if not _settings.metrics_bind:
        return
    from photo_sync.ho import catalog, metrics
    from photo_sync.ho.storage import Storage

    connect = check_storage = None
    if _settings.database_url:
        def connect():
            # A short statement timeout: a scrape must never queue behind a lock for long.
            return catalog.connect(_settings.database_url, statement_timeout_ms=10_000,
                                   lock_timeout_ms=1_000)
    if _settings.s3_endpoint and _settings.s3_access_key and _settings.s3_secret_key:
        check_storage = Storage.from_settings(_settings).check
    metrics.serve(_settings.metrics_bind, metrics.Exporter(connect, check_storage))


def child_exit(server, worker):
    """A worker that ended: its live gauges leave the sum (its counters stay in it)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)
