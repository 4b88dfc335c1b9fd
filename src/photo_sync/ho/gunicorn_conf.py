"""gunicorn settings for the HO sync API: `gunicorn -c python:photo_sync.ho.gunicorn_conf ...`.

Threads (gthread) keep a slow store's streaming download from holding a whole
worker, and the timeout only fires for a worker that stops heartbeating, not
for a long download. Bind, workers, threads and the log level come from
`HOSettings` (PHOTO_SYNC_HO_BIND, _WORKERS, _THREADS, _LOG_LEVEL), like every
other HO setting; the catalog, S3 and the key are checked by the app itself.
"""

from photo_sync.ho.settings import HOSettings

_settings = HOSettings.load(need_jwt=False, need_s3=False, need_database=False)

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
