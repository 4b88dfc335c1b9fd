"""One sync run: walk HO's change feed, download what the store lacks, write it.

- `incremental` continues the feed from the stored cursor; `full` walks the
  whole catalog and also removes photos HO no longer lists. A store with no
  cursor yet runs a full walk, and so does one whose cursor HO's history no
  longer holds (HO's catalog restored: the cursor is beyond HO's `head_cursor`,
  or HO's `epoch` is not the one stored with the cursor); photos whose checksum
  and metadata match are not downloaded again.
- Every feed item is checked by `protocol.parse_photo` before anything is
  planned from it: an item that does not validate fails alone (counted, named
  in the summary, reported to HO as `failed` when its id is a UUID), and the
  cursor still moves past its page, so the next run does not stop on it again.
- Downloads run in parallel, bounded in number and in bytes: the listed sizes
  of the photos downloading or waiting to be written stay under
  IN_FLIGHT_BYTES (a larger photo runs alone). They are verified against MD5
  and SHA-256 before anything is written, and written in small transactions.
- Writes run on one writer thread while the next downloads go on (a batch's
  listed sizes stay in the byte budget until its write is committed). Every
  other use of the store's connection (planning reads, marking a failure, the
  cursor) first waits for the write in progress, so the transactions are the
  ones a run without the writer thread would commit, in the same order.
- Deletions (tombstones in the feed and, after a complete walk, photos HO no
  longer lists) are collected during the walk and applied at its end, in one
  transaction with the last cursor, when the delete guard allows them
  (`max_delete_fraction` of the photos held at run start, or `--force-delete`).
  From the first page with a tombstone for a photo the store holds, the cursor
  is not committed page by page: a refused or broken run deletes nothing and
  loses no tombstone, and the next run reads those pages again (the photos it
  wrote meanwhile are then unchanged).
- Photos that fail keep their previous bytes, are marked `failed`, and are
  retried first on the next run from `photo_sync_retry`.
- A dry run takes this same path; it counts the downloads it would make (their
  listed sizes as `bytes`) instead of making them, and its store rolls the one
  transaction back at the end instead of committing: the counters are what the
  real run would report, and it refuses where the real run would.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field

import psycopg

from photo_sync import protocol
from photo_sync.edge import metrics
from photo_sync.edge.client import (Download, HOClient, LinkRefused, PhotoRejected,
                                    PhotoUnavailable, VerificationError)
from photo_sync.edge.settings import EdgeSettings
from photo_sync.edge.store import EdgeStore
from photo_sync.errors import DeleteRefused, HOError, HOUnreachable, PhotoSyncError

log = logging.getLogger(__name__)

MODES = ("full", "incremental")
WRITE_BATCH_PHOTOS = 64
WRITE_BATCH_BYTES = 16 * 1024 * 1024
# Listed bytes of the photos downloading or downloaded and not yet written: the
# agent's peak memory follows this, not the number of downloads (issue 8).
IN_FLIGHT_BYTES = 64 * 1024 * 1024
MAX_FAILURES_LISTED = 50
# The walk's first page is this small: HO answers it at once and the downloads start, while
# the next (full-size) page is fetched beside them. A 300-photo first page took HO 0.3 s
# to list and presign, all of it before the first byte moved (bench/profiles/README.md).
FIRST_PAGE_PHOTOS = 64
# After this many presigned fetches fail (S3 not reachable from the store, clock skew),
# the run stops trying them and takes every photo through the API. The same for signed
# links, counting failures other than a refused link (which a fresh listing mends).
PRESIGNED_GIVE_UP = 3
# A held row whose metadata differs from the feed's gets it rewritten (same bytes kept):
# the edge columns marked `meta` in the field table (protocol.PHOTO_FIELDS).
META_FIELDS = tuple(field.name for field in protocol.edge_meta_fields())


@dataclass
class RunSummary:
    """What one run did, or in a dry run would do: counters, outcome, failures. `as_dict()`
    is the JSON of `pull --json` and the module's result; `ids` is filled on request."""

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
    # {"photo_id", "error", "kind"} of the first MAX_FAILURES_LISTED failures; every
    # failure is counted in failed_by_kind (protocol.FAILURE_* -> photos).
    failures: list[dict] = field(default_factory=list)
    failed_by_kind: dict[str, int] = field(default_factory=dict)
    reported: int = 0
    report_pending: int = 0
    # {"download": [...], "update": [...], "delete": [...]} of photo ids (str), when asked.
    ids: dict | None = None

    @property
    def changed(self) -> bool:
        """True when the run wrote or deleted a photo (a dry run: would have)."""
        return bool(self.downloaded or self.updated or self.deleted)

    def as_dict(self) -> dict:
        """The summary as JSON-ready data, `changed` included."""
        result = asdict(self)
        result["changed"] = self.changed
        return result


def _same_metadata(held: dict, wanted: dict) -> bool:
    for name in META_FIELDS:
        held_value, wanted_value = held.get(name), wanted.get(name)
        if isinstance(held_value, dt.datetime) and isinstance(wanted_value, dt.datetime) and (
                held_value.tzinfo is None):
            # A pre-existing table may use timestamp without time zone.
            wanted_value = wanted_value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        if held_value != wanted_value:
            return False
    return True


class SyncRun:
    """One sync run of one store (the order of its steps is in the module docstring)."""

    def __init__(self, settings: EdgeSettings, mode: str, *, dry_run: bool = False,
                 force_delete: bool = False, list_ids: bool = False, progress=None,
                 client: HOClient | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.settings = settings
        self.mode = mode
        self.dry_run = dry_run
        self.force_delete = force_delete
        self.progress = progress
        self.summary = RunSummary(mode=mode, dry_run=dry_run, ids=(
            {"download": [], "update": [], "delete": []} if list_ids else None))
        self._own_client = client is None
        self.client = client or HOClient.from_settings(settings)
        self.store: EdgeStore | None = None
        self._batch: list[tuple[dict, Download]] = []
        self._batch_bytes = 0
        self._batch_listed = 0  # listed sizes of the batch (the in-flight budget counts these)
        # The batch the writer thread is writing, and its listed sizes (still in the budget).
        self._writing: Future | None = None
        self._writing_listed = 0
        self._writer: ThreadPoolExecutor | None = None
        self._in_flight = 0  # listed sizes of the downloads submitted and not yet done
        self._seen_live: set[uuid.UUID] = set()
        self._tombstones: dict[uuid.UUID, int] = {}  # held photos HO deleted -> their version
        self._hold_cursor = False
        self._cursor: str | None = None  # the walk's newest cursor
        self._epoch: str | None = None  # the epoch of HO's catalog the walk reads (if sent)
        self._would_download: set[uuid.UUID] = set()  # dry run: what it counted as downloaded
        self._held_at_start = 0
        self._last_progress = 0.0
        self._walked_from_start = False
        self._unavailable_in_a_row = 0
        self._presigned_failures = 0
        self._signed_failures = 0
        # The feed page being downloaded, as (cursor, first) for `_list`; None for retries.
        self._page_source: tuple[str | None, bool] | None = None
        # Signed links from pages listed again after a link was refused, per page source:
        # {id: (link, version, checksum)}; a page is listed again at most once a run.
        self._relisted: dict[tuple[str | None, bool], dict[uuid.UUID, tuple]] = {}
        self._relist_lock = threading.Lock()
        self._lock = threading.Lock()

    # The run --------------------------------------------------------------------------

    def execute(self) -> RunSummary:
        """Run to the end; the summary says how it went. Raises a PhotoSyncError when the
        run could not go on (HO unreachable, lock held, database failing)."""
        started = time.monotonic()
        run_id = None
        try:
            self.store = EdgeStore.from_settings(self.settings, dry_run=self.dry_run)
            try:
                self.store.check_schema()
                # A dry run takes the lock too: it must not report on a store a real run
                # is changing under it, and it fails (exit 3) where a real run would.
                self.store.acquire_run_lock()
                if not self.dry_run:
                    run_id = self.store.start_run(self.mode)
                    self._signal_run(running=True)
                self._held_at_start = self.store.count_photos()
                self.client.authenticate()
                with ThreadPoolExecutor(max_workers=self.settings.concurrency,
                                        thread_name_prefix="download") as pool, \
                        ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer") as writer:
                    self._pool, self._writer = pool, writer
                    try:
                        self._retry_failed()
                        self._walk()
                    finally:
                        self._wait_writes(check=False)
                self._apply_deletions()
            except psycopg.Error as exc:
                raise self.store.error(exc) from None
            self.summary.status = "partial" if self.summary.failed else "ok"
        except DeleteRefused as exc:
            self.summary.status = "refused"
            self.summary.error = str(exc)
        except PhotoSyncError as exc:
            self.summary.status = "failed"
            self.summary.error = str(exc)
            raise
        except Exception as exc:
            self.summary.status = "failed"
            self.summary.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.summary.duration = round(time.monotonic() - started, 3)
            self._finish(run_id)
        return self.summary

    def _finish(self, run_id: int | None) -> None:
        store = self.store
        try:
            if store is not None:
                # A real run has committed all it means to; a dry run ends here.
                store.rollback()
                if run_id is not None:
                    store.finish_run(run_id, {**asdict(self.summary)})
                    if self.settings.metrics_file:
                        metrics.write(self.settings.metrics_file, self.summary, store.status(),
                                      store.database_size(), store.data_directory())
        except Exception:  # the summary matters more than the bookkeeping of a broken DB
            log.exception("could not record the run summary")
        finally:
            if run_id is not None:
                self._signal_run(running=False)
            if store is not None:
                store.close()
            if self._own_client:
                self.client.close()

    def _signal_run(self, running: bool) -> None:
        """The run-in-progress textfile (metrics.write_run): set as the run starts, cleared
        as it ends; a failure to write it never stops the run."""
        if not self.settings.metrics_file:
            return
        if running:
            self._started_at = time.time()
        try:
            metrics.write_run(self.settings.metrics_file, self.mode, self._started_at,
                              running=running)
        except OSError as exc:
            log.warning("could not write the run signal beside %s: %s",
                        self.settings.metrics_file, exc)

    # Feed -------------------------------------------------------------------------------

    def _retry_failed(self) -> None:
        entries = self.store.retry_entries()
        if entries:
            log.info("retrying %d photos that failed before", len(entries))
            self._process(entries, cursor=None, from_retry=True)

    def _list(self, cursor: str | None, first: bool = False) -> dict:
        """One feed page, its envelope checked: an envelope that does not validate stops the
        run (nothing on it can be trusted), unlike an item that does not. A `first` page (of
        a walk from the start) is at most FIRST_PAGE_PHOTOS long."""
        limit = self.settings.page_size
        if first:
            limit = min(limit, FIRST_PAGE_PHOTOS)
        try:
            if cursor is None:
                body = self.client.list_page(offset=0, limit=limit)
            else:
                body = self.client.list_page(cursor=cursor, limit=limit)
        except ValueError:  # the body is not JSON
            raise HOUnreachable(f"HO at {self.settings.ho_url} sent a photo list page that is "
                                "not JSON: check HO's logs and what sits in front of it") from None
        try:
            return protocol.parse_page(body)
        except protocol.InvalidPage as exc:
            raise HOUnreachable(f"HO at {self.settings.ho_url} sent a photo list page that does "
                                f"not validate ({exc}): check HO's version and logs") from None

    def _walk(self) -> None:
        cursor = self.store.get_cursor() if self.mode == "incremental" else None
        self._walked_from_start = cursor is None
        if cursor is None and self.mode == "incremental":
            log.info("no cursor stored yet: walking the whole feed")
        # A walk from the start (a full sync) begins with a small page; an incremental one
        # continues with pages of the usual size (usually one page holds all it needs).
        page = self._list(cursor, first=cursor is None)
        why = self._feed_went_back(cursor, page) if cursor is not None else None
        if why:
            log.warning("%s: HO's catalog was restored or replaced, so the cursor no longer "
                        "continues its feed; walking the whole catalog (photos whose version "
                        "and checksum match are not downloaded again)", why)
            cursor, self._walked_from_start = None, True
            page = self._list(None, first=True)
        while True:
            self._epoch = page.get("epoch") or self._epoch
            next_cursor = page["next_cursor"]
            # Fetch the next page while this one downloads.
            upcoming: Future | None = None
            if page["has_more"]:
                if next_cursor == cursor:
                    raise HOUnreachable(f"HO at {self.settings.ho_url} says there is more, but "
                                        "its feed does not move past the cursor: check HO")
                upcoming = self._pool.submit(self._list, next_cursor)
            self.summary.listed += len(page["photos"])
            self._page_source = (cursor, cursor is None)  # as `_list` fetched it
            self._process(self._parse(page["photos"]), cursor=next_cursor)
            if upcoming is None:
                break
            cursor = next_cursor
            page = upcoming.result()

    def _feed_went_back(self, cursor: str, page: dict) -> str | None:
        """Why HO's feed no longer continues the stored cursor, or None when it does (or HO
        sends neither `epoch` nor `head_cursor`). After a restore of HO's catalog its change
        sequence goes back: the cursor stands beyond HO's newest change, or (restored into
        a new database or cluster) the catalog's epoch differs from the one stored."""
        held, epoch = self.store.get_epoch(), page.get("epoch")
        if held and epoch and held != epoch:
            return f"HO's catalog epoch changed from {held} to {epoch}"
        head = page.get("head_cursor")
        try:
            if head and protocol.decode_cursor(cursor) > protocol.decode_cursor(head):
                return "the stored cursor is beyond the newest change in HO's feed"
        except ValueError:  # not cursors this agent can read: HO's cursor stays opaque
            return None
        return None

    def _parse(self, items: list) -> list[dict]:
        """The page's items that validate; each one that does not fails alone."""
        photos = []
        for item in items:
            try:
                photos.append(protocol.parse_photo(item))
            except protocol.InvalidPhoto as exc:
                self._invalid(exc)
        return photos

    def _process(self, photos: list[dict], cursor: str | None, from_retry: bool = False) -> None:
        """Plan one page against what the store holds, then carry the plan out."""
        deletions = [p for p in photos if p["deleted"]]
        live = [p for p in photos if not p["deleted"]]
        held = self.store.states([p["id"] for p in live]) if live else {}
        to_download, to_update = [], []
        for photo in live:
            self._tombstones.pop(photo["id"], None)  # back at HO since its tombstone
            if not from_retry:
                self._seen_live.add(photo["id"])
            row = held.get(photo["id"])
            if photo["id"] in self._would_download:  # a dry run's retry entry, seen again
                self.summary.unchanged += 1
            elif row and row["has_bytes"] and row["checksum"] == photo["checksum"] and (
                    row["sync_status"] == "synced" or row["stored_md5"] == photo["checksum"]):
                if row["sync_status"] == "synced" and _same_metadata(row, photo):
                    self.summary.unchanged += 1
                else:
                    to_update.append(photo)
            else:
                to_download.append(photo)
        if deletions:
            present = self.store.present([p["id"] for p in deletions]) | self._would_download
            for photo in deletions:
                self._seen_live.discard(photo["id"])
                if photo["id"] in present:
                    self._tombstones[photo["id"]] = photo["version"]
                    if not self._hold_cursor:
                        log.info("the feed deletes photos the store holds: the cursor moves "
                                 "with the deletions at the end of the walk")
                        self._hold_cursor = True

        if to_update:
            self.store.update_metadata(to_update)
            self.summary.updated += len(to_update)
            self._note_ids("update", to_update)
        if self.dry_run:
            for photo in to_download:
                self._would_download.add(photo["id"])
                self.summary.downloaded += 1
                self.summary.bytes += photo["size"]
            self._note_ids("download", to_download)
        else:
            self._download_all(to_download)
            self._flush()
            self._wait_writes()
        if cursor is not None:
            self._cursor = cursor
            if not self._hold_cursor:
                self.store.set_cursor(cursor, self._epoch)
        self.store.commit()
        self._report_progress()

    def _download_all(self, photos: list[dict]) -> None:
        window = self.settings.concurrency * 2
        pending: dict[Future, dict] = {}
        queue = deque(photos)
        try:
            while queue or pending:
                while queue and len(pending) < window:
                    size = queue[0]["size"]
                    held = self._in_flight + self._batch_listed + self._writing_listed
                    if (pending or self._batch or self._writing) and \
                            held + size > IN_FLIGHT_BYTES:
                        if pending:
                            break  # wait for a download to end
                        # Only the write batches hold the budget: write them out.
                        self._flush()
                        self._wait_writes()
                        continue
                    photo = queue.popleft()
                    self._in_flight += size
                    pending[self._pool.submit(self._download_one, photo)] = photo
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    photo = pending.pop(future)
                    self._in_flight -= photo["size"]
                    result = self._outcome(future, photo, pending)
                    if result is None:
                        continue
                    self._batch.append((photo, result))
                    self._batch_bytes += len(result.data)
                    self._batch_listed += photo["size"]
                    if (len(self._batch) >= WRITE_BATCH_PHOTOS
                            or self._batch_bytes >= WRITE_BATCH_BYTES):
                        self._flush()
                    self._report_progress()
        except BaseException:
            for other in pending:
                other.cancel()
            raise

    def _outcome(self, future: Future, photo: dict, pending: dict) -> Download | None:
        """The download, or None when the photo failed alone (and is marked so)."""
        try:
            result = future.result()
        except HOError as exc:
            if exc.status == 404 and exc.code == "not_found":
                # Deleted at HO since it was listed: its tombstone follows in the feed.
                return None
            self._fail(photo, f"HO answered {exc.status} {exc.code}: {exc.detail}",
                       protocol.FAILURE_HTTP_ERROR)
            return None
        except VerificationError as exc:
            self._fail(photo, f"checksum verification failed: {exc}", exc.kind)
            return None
        except PhotoRejected as exc:  # too large, too slow, ...: the reason says which
            self._fail(photo, str(exc), exc.kind)
            return None
        except PhotoUnavailable as exc:
            # One photo HO cannot deliver fails alone; many in a row mean HO is down.
            self._unavailable_in_a_row += 1
            if self._unavailable_in_a_row >= max(3, self.settings.concurrency):
                raise HOUnreachable(f"{exc} (and {self._unavailable_in_a_row - 1} "
                                    "photos before it in a row)") from None
            self._fail(photo, str(exc), exc.kind)
            return None
        self._unavailable_in_a_row = 0
        return result

    def _download_one(self, photo: dict) -> Download:
        """Bytes through the gateway's signed link or straight from S3 when HO offered one
        (a presigned URL), else through the API."""
        link = photo.get("signed_url")
        if link and self._signed_failures < PRESIGNED_GIVE_UP:
            try:
                return self._fetch_signed(link, photo)
            except PhotoUnavailable as exc:
                log.info("signed download of %s failed (%s); using the HO API", photo["id"], exc)
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

    def _fetch_signed(self, link: str, photo: dict) -> Download:
        """The photo through its signed link; a link the gateway refuses (expired, or not
        valid) is replaced from the page listed again, once. PhotoUnavailable: use the API."""
        try:
            return self.client.fetch_signed(link, photo)
        except LinkRefused as exc:
            fresh = self._fresh_link(photo)
            if not fresh or fresh == link:
                raise PhotoUnavailable(f"{exc}, and no fresh link for it") from None
            log.info("signed link of %s refused (%s): using the one of the page listed again",
                     photo["id"], exc)
            try:
                return self.client.fetch_signed(fresh, photo)
            except LinkRefused as again:
                # HO and the gateway disagree (a secret rotated on one side): give up on
                # links after a few, as after any other failure.
                with self._lock:
                    self._signed_failures += 1
                raise PhotoUnavailable(f"{again} (a fresh link too)") from None
        except PhotoUnavailable:
            with self._lock:
                self._signed_failures += 1
            raise

    def _fresh_link(self, photo: dict) -> str | None:
        """The photo's signed link from its page listed again, when the photo there is the
        one being fetched (same version and checksum: the bytes are checked against the first
        listing): the first refused link of a page lists it (under a lock, once a run); the
        page's other downloads reuse that listing."""
        source = self._page_source
        if source is None:
            return None
        with self._relist_lock:
            links = self._relisted.get(source)
            if links is None:
                links = {}
                try:
                    page = self._list(*source)
                except (HOError, PhotoSyncError) as exc:
                    log.info("listing the page again for fresh links failed (%s)", exc)
                else:
                    for item in page["photos"]:
                        try:
                            fresh = protocol.parse_photo(item)
                        except protocol.InvalidPhoto:
                            continue  # counted when its page was first listed
                        links[fresh["id"]] = (fresh["signed_url"], fresh["version"],
                                              fresh["checksum"])
                self._relisted[source] = links
        link, version, checksum = links.get(photo["id"], (None, None, None))
        return link if (version, checksum) == (photo["version"], photo["checksum"]) else None

    def _flush(self) -> None:
        """Hand the write batch to the writer thread (after the write before it), which
        writes and commits it while the downloads go on."""
        if not self._batch:
            return
        self._wait_writes()
        batch, nbytes = self._batch, self._batch_bytes
        self._writing_listed = self._batch_listed
        self._batch, self._batch_bytes, self._batch_listed = [], 0, 0
        self._writing = self._writer.submit(self._write, batch, nbytes)

    def _write(self, batch: list[tuple[dict, Download]], nbytes: int) -> None:
        self.store.write_photos(batch)
        self.store.commit()
        with self._lock:
            self.summary.downloaded += len(batch)
            self.summary.bytes += nbytes
            self._note_ids("download", [p for p, _ in batch])

    def _wait_writes(self, check: bool = True) -> None:
        """Wait for the write in progress (its error raised when `check`), so the caller
        may use the store's connection."""
        job, self._writing = self._writing, None
        self._writing_listed = 0
        if job is None:
            return
        if check:
            job.result()
        else:
            wait([job])

    def _note_ids(self, kind: str, photos: list) -> None:
        if self.summary.ids is not None:
            self.summary.ids[kind] += [str(p["id"] if isinstance(p, dict) else p)
                                       for p in photos]

    def _fail(self, photo: dict, error: str, kind: str) -> None:
        log.warning("photo %s failed: %s", photo["id"], error)
        self._wait_writes()
        self.store.mark_failed(photo, error)
        self._count_failure(str(photo["id"]), error, kind)

    def _invalid(self, exc: protocol.InvalidPhoto) -> None:
        """A feed item that does not validate fails alone; when its id is a UUID the store
        marks the photo failed (keeping its bytes) and HO hears of it."""
        error = str(exc)
        log.warning("%s", error)
        if exc.photo_id is not None:
            # Never delete a photo because HO described it badly.
            self._seen_live.add(exc.photo_id)
            self._tombstones.pop(exc.photo_id, None)
            self.store.mark_invalid(exc.photo_id, exc.version, error)
        self._count_failure(str(exc.photo_id) if exc.photo_id else exc.raw_id, error,
                            protocol.FAILURE_INVALID)

    def _count_failure(self, photo_id: str, error: str, kind: str) -> None:
        """One failed photo: counted by its kind (protocol.FAILURE_*), listed with its
        reason while the list is short."""
        self.summary.failed += 1
        self.summary.failed_by_kind[kind] = self.summary.failed_by_kind.get(kind, 0) + 1
        if len(self.summary.failures) < MAX_FAILURES_LISTED:
            self.summary.failures.append({"photo_id": photo_id, "error": error, "kind": kind})

    # Deletions ----------------------------------------------------------------------------

    def _apply_deletions(self) -> None:
        """The walk's deletions, guarded once for the whole run, then committed with the
        last cursor; refused, nothing is deleted and the cursor stays where it was."""
        doomed = dict(self._tombstones)
        unlisted = 0
        if self.mode == "full" or self._walked_from_start:
            for photo_id in self.store.ids_not_in(self._seen_live):
                if photo_id not in doomed:
                    doomed[photo_id] = 0  # the store's own version goes into the report
                    unlisted += 1
        if doomed:
            self._guard(len(doomed), len(doomed) - unlisted, unlisted)
            gone = self.store.delete_photos(list(doomed), doomed)
            self.summary.deleted += len(gone)
            self._note_ids("delete", gone)
        if self._hold_cursor and self._cursor is not None:
            self.store.set_cursor(self._cursor, self._epoch)
        self.store.commit()

    def _guard(self, count: int, tombstoned: int, unlisted: int) -> None:
        total = self._held_at_start
        fraction = count / total if total else 0.0
        if fraction <= self.settings.max_delete_fraction or self.force_delete:
            return
        why = (" and ".join(part for part in (
            f"HO deleted {tombstoned}" if tombstoned else "",
            f"HO no longer lists {unlisted}" if unlisted else "") if part))
        raise DeleteRefused(
            f"refusing to delete {count} of {total} photos ({fraction:.0%}, above "
            f"max_delete_fraction {self.settings.max_delete_fraction:.0%}; {why}): nothing "
            "was deleted and the next run asks again; check HO's catalog, then rerun with "
            "--force-delete if intended")

    def _report_progress(self) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self._last_progress >= 0.5:
            self._last_progress = now
            self.progress(self.summary)


def run_sync(settings: EdgeSettings, mode: str, *, dry_run: bool = False,
             force_delete: bool = False, list_ids: bool = False, report: bool = True,
             progress=None) -> RunSummary:
    """One sync run (and, unless report=False or a dry run, delivery of pending status
    reports). `list_ids` fills `summary.ids`."""
    # One client for the run and its reports: the reports reuse its token and connections.
    client = HOClient.from_settings(settings)
    mirrored = bool(settings.serve_cache_dir) and not dry_run
    try:
        # The photo mirror refreshes only what the run changed: the run names the ids.
        summary = SyncRun(settings, mode, dry_run=dry_run, force_delete=force_delete,
                          list_ids=list_ids or mirrored, progress=progress,
                          client=client).execute()
        if mirrored:
            from photo_sync.edge.mirror import changed_ids, refresh_after_sync
            # The photo mirror follows the table (never fails the run).
            refresh_after_sync(settings, changed_ids(summary))
            if not list_ids:
                summary.ids = None
        if report and not dry_run:
            from photo_sync.edge.reporter import deliver
            try:
                result = deliver(settings, client=client)
                summary.reported, summary.report_pending = result.reported, result.pending
            except HOUnreachable as exc:
                log.warning("status reports stay queued: %s", exc)
    finally:
        client.close()
    return summary
