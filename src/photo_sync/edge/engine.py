"""One sync run: walk HO's change feed, download what the store lacks, write it.

- `incremental` continues the feed from the stored cursor; `full` walks the
  whole catalog and also removes photos HO no longer has (guarded by
  `max_delete_fraction`). A store with no cursor yet runs a full walk.
- Downloads run in parallel (bounded), are verified against MD5 and SHA-256
  before anything is written, and are written in small transactions; the
  cursor moves only in the transaction that commits the last photo of its page.
- Photos that fail keep their previous bytes, are marked `failed`, and are
  retried first on the next run from `photo_sync_retry`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field

from photo_sync.edge import metrics
from photo_sync.edge.client import (Download, HOClient, PhotoRejected, PhotoUnavailable,
                                    VerificationError)
from photo_sync.errors import DeleteRefused, HOError, HOUnreachable
from photo_sync.edge.settings import EdgeSettings
from photo_sync.edge.store import EdgeStore, _ts

log = logging.getLogger(__name__)

MODES = ("full", "incremental")
WRITE_BATCH_PHOTOS = 64
WRITE_BATCH_BYTES = 16 * 1024 * 1024
MAX_FAILURES_LISTED = 50
# After this many presigned fetches fail (S3 not reachable from the store, clock skew),
# the run stops trying them and takes every photo through the API.
PRESIGNED_GIVE_UP = 3
META_FIELDS = ("product_id", "object_key", "filename", "size", "content_type", "version",
               "is_primary", "sort_order")


@dataclass
class RunSummary:
    mode: str
    dry_run: bool = False
    status: str = "running"  # ok | partial | failed | refused
    listed: int = 0
    downloaded: int = 0
    unchanged: int = 0
    updated: int = 0
    deleted: int = 0
    failed: int = 0
    bytes: int = 0
    duration: float = 0.0
    error: str | None = None
    failures: list[dict] = field(default_factory=list)
    plan: dict | None = None
    reported: int = 0
    report_pending: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.downloaded or self.updated or self.deleted)

    def as_dict(self) -> dict:
        result = asdict(self)
        result["changed"] = self.changed
        return result


def _norm(photo: dict) -> dict:
    photo = dict(photo)
    photo["id"] = uuid.UUID(str(photo["id"]))
    photo["product_id"] = uuid.UUID(str(photo["product_id"])) if photo.get("product_id") else None
    return photo


def _same_metadata(held: dict, wanted: dict) -> bool:
    for name in META_FIELDS:
        if held.get(name) != wanted.get(name):
            return False
    held_ts, wanted_ts = held.get("updated_at"), wanted.get("updated_at")
    if held_ts is None or wanted_ts is None:
        return held_ts == wanted_ts
    wanted_ts = _ts(wanted_ts)
    if held_ts.tzinfo is None:  # a pre-existing table may use timestamp without time zone
        wanted_ts = wanted_ts.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return held_ts == wanted_ts


class SyncRun:
    def __init__(self, settings: EdgeSettings, mode: str, *, dry_run: bool = False,
                 force_delete: bool = False, progress=None, client: HOClient | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.settings = settings
        self.mode = mode
        self.dry_run = dry_run
        self.force_delete = force_delete
        self.progress = progress
        self.summary = RunSummary(mode=mode, dry_run=dry_run)
        self.client = client or HOClient.from_settings(settings)
        self.store: EdgeStore | None = None
        self._batch: list[tuple[dict, Download]] = []
        self._batch_bytes = 0
        self._seen_live: set[uuid.UUID] = set()
        self._plan = {"download": [], "update": [], "delete": [], "bytes": 0}
        self._last_progress = 0.0
        self._walked_from_start = False
        self._unavailable_in_a_row = 0
        self._presigned_failures = 0
        self._lock = threading.Lock()

    # The run --------------------------------------------------------------------------

    def execute(self) -> RunSummary:
        started = time.monotonic()
        self.store = EdgeStore(self.settings.database_url, self.settings.table)
        run_id = None
        try:
            self.store.check_schema()
            if not self.dry_run:
                self.store.acquire_run_lock()
                run_id = self.store.start_run(self.mode)
            self.client.authenticate()
            with ThreadPoolExecutor(max_workers=self.settings.concurrency,
                                    thread_name_prefix="download") as pool:
                self._pool = pool
                self._retry_failed()
                self._walk()
            if self.mode == "full" or self._walked_from_start:
                self._remove_missing()
            self.summary.status = "partial" if self.summary.failed else "ok"
        except DeleteRefused as exc:
            self.summary.status = "refused"
            self.summary.error = str(exc)
        except HOUnreachable as exc:
            self.summary.status = "failed"
            self.summary.error = str(exc)
            raise
        except Exception as exc:
            self.summary.status = "failed"
            self.summary.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.summary.duration = round(time.monotonic() - started, 3)
            if self.dry_run:
                self.summary.plan = {"download": [str(i) for i in self._plan["download"]],
                                     "update": [str(i) for i in self._plan["update"]],
                                     "delete": [str(i) for i in self._plan["delete"]],
                                     "bytes": self._plan["bytes"]}
            self._finish(run_id)
        return self.summary

    def _finish(self, run_id: int | None) -> None:
        store = self.store
        try:
            store.rollback()
            if run_id is not None:
                store.finish_run(run_id, {**asdict(self.summary)})
                if self.settings.metrics_file:
                    metrics.write(self.settings.metrics_file, self.summary, store.status())
        except Exception:  # the summary matters more than the bookkeeping of a broken DB
            log.exception("could not record the run summary")
        finally:
            store.close()
            self.client.close()

    # Feed -------------------------------------------------------------------------------

    def _retry_failed(self) -> None:
        entries = self.store.retry_entries()
        if entries:
            log.info("retrying %d photos that failed before", len(entries))
            self._process(entries, cursor=None, from_retry=True)

    def _walk(self) -> None:
        cursor = self.store.get_cursor() if self.mode == "incremental" else None
        self._walked_from_start = cursor is None
        if cursor is None and self.mode == "incremental":
            log.info("no cursor stored yet: walking the whole feed")
        page_size = self.settings.page_size
        if cursor is None:
            page = self.client.list_page(offset=0, limit=page_size)
        else:
            page = self.client.list_page(cursor=cursor, limit=page_size)
        while True:
            next_cursor = page["next_cursor"]
            # Fetch the next page while this one downloads.
            upcoming: Future | None = None
            if page["has_more"]:
                upcoming = self._pool.submit(self.client.list_page, cursor=next_cursor,
                                             limit=page_size)
            self.summary.listed += len(page["photos"])
            self._process([_norm(p) for p in page["photos"]], cursor=next_cursor)
            if upcoming is None:
                break
            page = upcoming.result()

    def _process(self, photos: list[dict], cursor: str | None, from_retry: bool = False) -> None:
        """Plan one page against what the store holds, then carry the plan out."""
        deletions = [p for p in photos if p.get("deleted")]
        live = [p for p in photos if not p.get("deleted")]
        held = self.store.states([p["id"] for p in live]) if live else {}
        to_download, to_update = [], []
        for photo in live:
            if not from_retry:
                self._seen_live.add(photo["id"])
            row = held.get(photo["id"])
            if row and row["has_bytes"] and row["checksum"] == photo["checksum"] and (
                    row["sync_status"] == "synced" or row["stored_md5"] == photo["checksum"]):
                if row["sync_status"] == "synced" and _same_metadata(row, photo):
                    self.summary.unchanged += 1
                else:
                    to_update.append(photo)
            else:
                to_download.append(photo)
        for photo in deletions:
            self._seen_live.discard(photo["id"])

        if self.dry_run:
            self._plan["download"] += [p["id"] for p in to_download]
            self._plan["bytes"] += sum(p.get("size") or 0 for p in to_download)
            self._plan["update"] += [p["id"] for p in to_update]
            present = self.store.states([p["id"] for p in deletions]) if deletions else {}
            self._plan["delete"] += [p["id"] for p in deletions if p["id"] in present]
            return

        if deletions:
            self.summary.deleted += self.store.delete_photos(
                [p["id"] for p in deletions], {p["id"]: p.get("version") or 0 for p in deletions})
        if to_update:
            self.store.update_metadata(to_update)
            self.summary.updated += len(to_update)
        self._download_all(to_download)
        self._flush()
        if cursor is not None:
            self.store.set_cursor(cursor)
        self.store.commit()
        self._report_progress()

    def _download_all(self, photos: list[dict]) -> None:
        window = self.settings.concurrency * 2
        pending: dict[Future, dict] = {}
        queue = iter(photos)
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < window:
                photo = next(queue, None)
                if photo is None:
                    exhausted = True
                    break
                pending[self._pool.submit(self._download_one, photo)] = photo
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                photo = pending.pop(future)
                try:
                    result = future.result()
                except HOError as exc:
                    if exc.status == 404 and exc.code == "not_found":
                        # Deleted at HO since it was listed: its tombstone follows in the feed.
                        continue
                    self._fail(photo, f"HO answered {exc.status} {exc.code}: {exc.detail}")
                    continue
                except VerificationError as exc:
                    self._fail(photo, f"checksum verification failed: {exc}")
                    continue
                except PhotoRejected as exc:  # too large, too slow: this photo fails alone
                    self._fail(photo, str(exc))
                    continue
                except PhotoUnavailable as exc:
                    # One photo HO cannot deliver fails alone; many in a row mean HO is down.
                    self._unavailable_in_a_row += 1
                    if self._unavailable_in_a_row >= max(3, self.settings.concurrency):
                        for other in pending:
                            other.cancel()
                        raise HOUnreachable(f"{exc} (and {self._unavailable_in_a_row - 1} "
                                            "photos before it in a row)") from None
                    self._fail(photo, str(exc))
                    continue
                except HOUnreachable:
                    for other in pending:
                        other.cancel()
                    raise
                self._unavailable_in_a_row = 0
                self._batch.append((photo, result))
                self._batch_bytes += len(result.data)
                if len(self._batch) >= WRITE_BATCH_PHOTOS or self._batch_bytes >= WRITE_BATCH_BYTES:
                    self._flush()
                    self.store.commit()
                self._report_progress()

    def _download_one(self, photo: dict) -> Download:
        """Bytes straight from S3 when HO offered a presigned URL, else through the API."""
        url = photo.get("download_url")
        if url and self.settings.presigned and self._presigned_failures < PRESIGNED_GIVE_UP:
            try:
                return self.client.fetch_presigned(url, photo)
            except PhotoUnavailable as exc:
                with self._lock:
                    self._presigned_failures += 1
                log.info("presigned download of %s failed (%s); using the HO API",
                         photo["id"], exc)
        return self.client.download(photo)

    def _flush(self) -> None:
        if not self._batch:
            return
        self.store.write_photos(self._batch)
        self.summary.downloaded += len(self._batch)
        self.summary.bytes += self._batch_bytes
        self._batch, self._batch_bytes = [], 0

    def _fail(self, photo: dict, error: str) -> None:
        log.warning("photo %s failed: %s", photo["id"], error)
        self.store.mark_failed(photo, error)
        self.summary.failed += 1
        if len(self.summary.failures) < MAX_FAILURES_LISTED:
            self.summary.failures.append({"photo_id": str(photo["id"]), "error": error})

    def _remove_missing(self) -> None:
        """After a complete walk: photos the store has that HO no longer lists."""
        stale = self.store.ids_not_in(self._seen_live)
        if not stale:
            return
        if self.dry_run:
            self._plan["delete"] += stale
            return
        total = self.store.count_photos()
        fraction = len(stale) / total if total else 0.0
        if fraction > self.settings.max_delete_fraction and not self.force_delete:
            raise DeleteRefused(
                f"refusing to delete {len(stale)} of {total} photos ({fraction:.0%}, above "
                f"max_delete_fraction {self.settings.max_delete_fraction:.0%}) that HO no "
                "longer lists: check HO's catalog, then rerun with --force-delete if intended")
        self.summary.deleted += self.store.delete_photos(stale)
        self.store.commit()

    def _report_progress(self) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self._last_progress >= 0.5:
            self._last_progress = now
            self.progress(self.summary)


def run_sync(settings: EdgeSettings, mode: str, *, dry_run: bool = False,
             force_delete: bool = False, report: bool = True, progress=None) -> RunSummary:
    """One sync run (and, unless report=False, delivery of pending status reports)."""
    summary = SyncRun(settings, mode, dry_run=dry_run, force_delete=force_delete,
                      progress=progress).execute()
    if report and not dry_run:
        from photo_sync.edge.reporter import deliver
        try:
            result = deliver(settings)
            summary.reported, summary.report_pending = result.reported, result.pending
        except HOUnreachable as exc:
            log.warning("status reports stay queued: %s", exc)
    return summary
