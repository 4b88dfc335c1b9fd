"""gunicorn settings for the HO sync API: `gunicorn -c python:photo_sync.ho.gunicorn_conf ...`.

Threads (gthread) keep a slow store's streaming download from holding a whole
worker, and the timeout only fires for a worker that stops heartbeating, not
for a long download.
"""

import multiprocessing
import os

bind = os.environ.get("PHOTO_SYNC_HO_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("PHOTO_SYNC_HO_WORKERS") or min(4, multiprocessing.cpu_count() * 2))
worker_class = "gthread"
threads = int(os.environ.get("PHOTO_SYNC_HO_THREADS") or 8)
timeout = 60
graceful_timeout = 30
keepalive = 30
max_requests = 10000
max_requests_jitter = 1000
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("PHOTO_SYNC_HO_LOG_LEVEL", "info")
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms'
