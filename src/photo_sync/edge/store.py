"""All of the agent's SQL against the store's PostgreSQL.

Bytes go in as binary parameters (psycopg 3 `%b`): hex-escaped text
parameters cost 3x the CPU and cap ingest near 40 MB/s here. A photo's row is
written by one statement, so a failure anywhere keeps the previous good
bytes; the outbox entry and the cursor commit in the same transaction as the
rows they describe.

Every session is opened by `photo_sync.db.connect`, so it carries
`statement_timeout` and `lock_timeout`: a row lock held elsewhere ends the run
with an error (`database_error`) instead of a hang.

A dry run goes through the same statements: its store never commits, and the
engine rolls the one transaction back at the end, so what a dry run counts is
what the real run would do (later pages see the earlier pages' writes).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Iterable

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from photo_sync import db, protocol
from photo_sync.edge import schema
from photo_sync.edge.settings import is_loopback
from photo_sync.errors import DatabaseUnavailable, LockHeld, SchemaMissing

LOCK_KEY_SQL = "hashtext('photo_sync_edge_run')"
CURSOR_KEY = "cursor"
EPOCH_KEY = "feed_epoch"  # which HO catalog the cursor belongs to (HO's feed `epoch`)
STALE_RUN_ERROR = "the run stopped without finishing (crash, kill or reboot)"
SETTING = "PHOTO_SYNC_EDGE_DATABASE_URL"

log = logging.getLogger(__name__)


def _now() -> dt.datetime:
    """The agent's clock for the times it reports (`synced_at`): `time.time()`, the one wall
    clock the agent reads (the metrics too), so a test can run it off HO's."""
    return dt.datetime.fromtimestamp(time.time(), dt.timezone.utc)


def _ts(value):
    """An aware datetime from a parsed feed item (already one) or ISO text."""
    if not value or isinstance(value, dt.datetime):
        return value or None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def database_error(exc: psycopg.Error, lock_timeout: float | None = None) -> DatabaseUnavailable:
    """The one wording of a store database failure during a run (exit 2)."""
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        waited = f" for {lock_timeout:g}s" if lock_timeout else ""
        return DatabaseUnavailable(
            f"another session holds a lock on the store's photo tables; waited{waited} "
            "(PHOTO_SYNC_EDGE_LOCK_TIMEOUT) and gave up, nothing of this batch was written: "
            "find the session in pg_stat_activity / pg_locks, end it, and run again")
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return DatabaseUnavailable(
            f"a statement on the store database ran into its time limit ({db.first_line(exc)})"
            ": check the database's load and locks, then run again")
    if isinstance(exc, psycopg.errors.DiskFull):
        # Not a connection problem: "check the URL" would send the operator the wrong way.
        return DatabaseUnavailable(
            f"the store database ran out of disk space ({db.first_line(exc)}); the batch in "
            "progress was not written and every photo keeps the bytes it had: free space on "
            "the file system that holds the database (or the photo table's tablespace), or "
            "grow it, then run again")
    return db.unavailable(exc, SETTING)


def _names(names) -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Identifier, names))


def _edge_row(photo: dict, **override) -> dict:
    """A parsed feed item as parameters of the edge's photo statements: every edge column's
    field (times from ISO text, if given as text), with `override` on top."""
    row = {f.name: (_ts(photo[f.name]) if f.schema.get("format") == "date-time"
                    else photo[f.name]) for f in protocol.edge_fields()}
    row.update(override)
    return row


class EdgeStore:
    """The agent's view of the store's PostgreSQL: planning reads, photo writes, the run
    lock, cursor, run history and outbox. `dry_run=True`: nothing is ever committed."""

    @classmethod
    def from_settings(cls, settings, *, dry_run: bool = False) -> "EdgeStore":
        """The store an edge run uses, configured from its `EdgeSettings`."""
        return cls(settings.database_url, settings.table, dry_run=dry_run,
                   lock_timeout=getattr(settings, "lock_timeout", None))

    def __init__(self, database_url: str, table: str = "product_photo", *,
                 dry_run: bool = False, lock_timeout: float | None = None):
        schema.check_identifier(table, "table")
        self.table = table
        self.dry_run = dry_run
        self.lock_timeout = lock_timeout
        self._timeouts = ({"lock_timeout_ms": int(lock_timeout * 1000)}
                          if lock_timeout else {})
        self.conn = db.connect(database_url, setting=SETTING, row_factory=dict_row,
                               **self._timeouts)
        self._lock_conn: psycopg.Connection | None = None
        self._database_url = database_url
        t = sql.Identifier(table).as_string(self.conn)
        self._t = t
        # The photo fields' columns come from the field table (protocol.PHOTO_FIELDS).
        table_id = sql.Identifier(table)
        fields = [f.name for f in protocol.edge_fields()]
        changed = [name for name in fields if name != "id"]
        ident, value = sql.Identifier, sql.Placeholder
        self._upsert = sql.SQL(
            "INSERT INTO {t} AS p ({cols}, image_binary, last_sync_at, sync_status, sync_error) "
            "VALUES ({values}, {data}, now(), 'synced', NULL) ON CONFLICT (id) DO UPDATE SET "
            "{sets}, image_binary = EXCLUDED.image_binary, "
            "last_sync_at = EXCLUDED.last_sync_at, sync_status = 'synced', sync_error = NULL"
        ).format(t=table_id, cols=_names(fields), values=sql.SQL(", ").join(map(value, fields)),
                 data=value("image_binary", sql.PyFormat.BINARY),
                 sets=sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(ident(n), ident(n))
                                         for n in changed))
        # Same bytes, new metadata: the bytes are left alone.
        self._update_meta = sql.SQL(
            "UPDATE {t} SET {sets}, last_sync_at = now(), sync_status = 'synced', "
            "sync_error = NULL WHERE id = %(id)s").format(
            t=table_id, sets=sql.SQL(", ").join(
                sql.SQL("{} = {}").format(ident(f.name), value(f.name))
                for f in protocol.edge_meta_fields()))
        # A failure never touches bytes or the metadata that describes them; a photo
        # new to the store gets its metadata and no bytes.
        self._mark_failed = sql.SQL(
            "INSERT INTO {t} AS p ({cols}, sync_status, sync_error) "
            "VALUES ({values}, 'failed', %(sync_error)s) "
            "ON CONFLICT (id) DO UPDATE SET sync_status = 'failed', "
            "sync_error = EXCLUDED.sync_error").format(
            t=table_id, cols=_names(fields), values=sql.SQL(", ").join(
                sql.SQL("NULL") if f.of_bytes else value(f.name) for f in protocol.edge_fields()))
        self._states = sql.SQL(
            "SELECT {cols}, sync_status, image_binary IS NOT NULL AS has_bytes, "
            "CASE WHEN sync_status IS DISTINCT FROM 'synced' AND image_binary IS NOT NULL "
            "THEN md5(image_binary) END AS stored_md5 FROM {t} WHERE id = ANY(%s)").format(
            t=table_id, cols=_names(fields))

    def error(self, exc: psycopg.Error) -> DatabaseUnavailable:
        """`database_error` with this store's lock timeout."""
        return database_error(exc, self.lock_timeout)

    def close(self) -> None:
        """Close the store's connections (the run lock goes with its own)."""
        self.conn.close()
        if self._lock_conn is not None:
            self._lock_conn.close()

    # Preconditions ------------------------------------------------------------------

    def check_schema(self) -> None:
        """SchemaMissing, saying what to run, when the edge schema is not in place."""
        gaps = schema.missing(self.conn, self.table)
        self.conn.rollback()
        if gaps:
            raise SchemaMissing(f"the edge schema is not ready ({', '.join(gaps[:4])} missing): "
                                "run `photo-sync-edge schema apply` or the edge_photo_sync role")

    def acquire_run_lock(self) -> None:
        """One run at a time per database: a session lock held by a connection of its own."""
        self._lock_conn = db.connect(self._database_url, setting=SETTING, autocommit=True,
                                     **self._timeouts)
        got = self._lock_conn.execute(f"SELECT pg_try_advisory_lock({LOCK_KEY_SQL})").fetchone()[0]
        if not got:
            self._lock_conn.close()
            self._lock_conn = None
            raise LockHeld("another photo-sync run is in progress on this database; "
                           "it holds the run lock (try again when it ends)")

    # Planning -----------------------------------------------------------------------

    def states(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, dict]:
        """What the store holds for these photos. Unsynced rows get their bytes' MD5
        checked in the database, so a reset status does not force a download."""
        rows = self.conn.execute(self._states, (ids,)).fetchall()
        self._end_read()
        return {row["id"]: row for row in rows}

    def count_photos(self) -> int:
        """How many photos the store holds (the delete guard's denominator)."""
        n = self.conn.execute(f"SELECT count(*) AS n FROM {self._t}").fetchone()["n"]
        self._end_read()
        return n

    def present(self, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these photos the store holds."""
        if not ids:
            return set()
        rows = self.conn.execute(f"SELECT id FROM {self._t} WHERE id = ANY(%s)",
                                 (list(ids),)).fetchall()
        self._end_read()
        return {row["id"] for row in rows}

    def ids_not_in(self, keep: Iterable[uuid.UUID]) -> list[uuid.UUID]:
        """Photos the store holds that are not in `keep` (a full walk's live ids)."""
        rows = self.conn.execute(f"SELECT id FROM {self._t} WHERE NOT (id = ANY(%s))",
                                 (list(keep),)).fetchall()
        self._end_read()
        return [row["id"] for row in rows]

    def _end_read(self) -> None:
        # A real run ends each read transaction at once (no snapshot held across HTTP
        # calls); a dry run keeps its one transaction, so it sees its own writes.
        if not self.dry_run:
            self.conn.commit()

    # Writes (the caller commits) ----------------------------------------------------

    def write_photos(self, items: list[tuple[dict, "object"]]) -> None:
        """Upsert verified photos with their bytes; queue 'synced' reports."""
        now = _now()
        with self.conn.cursor() as cur:
            # What describes the bytes comes from the verified download.
            cur.executemany(self._upsert, [
                _edge_row(p, size=len(d.data), content_type=d.content_type or p["content_type"],
                          checksum=d.checksum, version=d.version, image_binary=d.data)
                for p, d in items])
            self._queue(cur, [(p["id"], d.version, protocol.STATUS_SYNCED, now, None)
                              for p, d in items])
            cur.execute("DELETE FROM photo_sync_retry WHERE photo_id = ANY(%s)",
                        ([p["id"] for p, _ in items],))

    def update_metadata(self, photos: list[dict]) -> None:
        """Same bytes, new metadata: rewrite the row's metadata; queue 'synced' reports."""
        now = _now()
        with self.conn.cursor() as cur:
            cur.executemany(self._update_meta, [_edge_row(p) for p in photos])
            self._queue(cur, [(p["id"], p["version"], protocol.STATUS_SYNCED, now, None)
                              for p in photos])
            cur.execute("DELETE FROM photo_sync_retry WHERE photo_id = ANY(%s)",
                        ([p["id"] for p in photos],))

    def mark_failed(self, photo: dict, error: str) -> None:
        """This photo could not be had: keep what the store holds, mark it failed, queue a
        'failed' report, and queue it for a retry on the next run."""
        error = error[:2000]
        with self.conn.cursor() as cur:
            cur.execute(self._mark_failed, _edge_row(photo, sync_error=error))
            self._queue(cur, [(photo["id"], photo["version"], protocol.STATUS_FAILED, None, error)])
            # A presigned URL or signed link expires; the retry goes through the API.
            wanted = protocol.dump_photo({k: v for k, v in photo.items()
                                          if k not in protocol.SHORT_LIVED_FIELDS})
            cur.execute(
                "INSERT INTO photo_sync_retry (photo_id, photo, last_error) VALUES (%s, %s, %s) "
                "ON CONFLICT (photo_id) DO UPDATE SET photo = EXCLUDED.photo, "
                "attempts = photo_sync_retry.attempts + 1, last_error = EXCLUDED.last_error, "
                "updated_at = now()", (photo["id"], json.dumps(wanted), error))

    def mark_invalid(self, photo_id: uuid.UUID, version: int | None, error: str) -> None:
        """HO's feed item for this photo does not validate: keep the row's bytes and
        metadata, mark it failed, and queue a 'failed' report. No retry entry: the item
        comes again in the feed once HO fixes it."""
        error = error[:2000]
        with self.conn.cursor() as cur:
            cur.execute(f"UPDATE {self._t} SET sync_status = 'failed', sync_error = %s "
                        "WHERE id = %s RETURNING version", (error, photo_id))
            row = cur.fetchone()
            held = (row or {}).get("version") or 0
            cur.execute("DELETE FROM photo_sync_retry WHERE photo_id = %s", (photo_id,))
            # HO keeps a store's newest report per photo: carry the newest version known.
            self._queue(cur, [(photo_id, max(version or 0, held), protocol.STATUS_FAILED,
                               None, error)])

    def delete_photos(self, ids: list[uuid.UUID], versions: dict | None = None
                      ) -> list[uuid.UUID]:
        """Delete these photos (those held); queue 'deleted' reports. Returns the ids
        deleted."""
        if not ids:
            return []
        with self.conn.cursor() as cur:
            cur.execute(f"DELETE FROM {self._t} WHERE id = ANY(%s) RETURNING id, version", (ids,))
            gone = cur.fetchall()
            cur.execute("DELETE FROM photo_sync_retry WHERE photo_id = ANY(%s)", (ids,))
            # HO keeps a store's newest report per photo: a 'deleted' report must carry at
            # least the version the store held, or HO drops it as stale.
            self._queue(cur, [(r["id"], max((versions or {}).get(r["id"]) or 0, r["version"] or 0),
                               protocol.STATUS_DELETED, None, None) for r in gone])
        return [r["id"] for r in gone]

    @staticmethod
    def _queue(cur, rows: list[tuple]) -> None:
        if rows:
            cur.executemany(
                "INSERT INTO photo_sync_outbox (photo_id, version, status, synced_at, error) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (photo_id) DO UPDATE SET "
                "version = EXCLUDED.version, status = EXCLUDED.status, "
                "synced_at = EXCLUDED.synced_at, error = EXCLUDED.error, "
                "queued_at = clock_timestamp()", rows)

    def set_cursor(self, cursor: str, epoch: str | None = None) -> None:
        """Store the feed cursor (and the epoch of the catalog it belongs to, when HO sent
        one); it commits with the page it stands after."""
        for key, value in ((CURSOR_KEY, cursor), (EPOCH_KEY, epoch)):
            if value is not None:
                self.conn.execute(
                    "INSERT INTO photo_sync_state (key, value) VALUES (%s, %s) ON CONFLICT "
                    "(key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                    (key, value))

    def commit(self) -> None:
        """Commit the writes so far; in a dry run, keep them in the open transaction (the
        engine rolls it back at the end)."""
        if not self.dry_run:
            self.conn.commit()

    def rollback(self) -> None:
        """Roll back the open transaction."""
        self.conn.rollback()

    # State --------------------------------------------------------------------------

    def get_cursor(self) -> str | None:
        """The stored feed cursor, or None before the first complete page."""
        return self._state(CURSOR_KEY)

    def get_epoch(self) -> str | None:
        """The epoch of the HO catalog the stored cursor belongs to (None: not known)."""
        return self._state(EPOCH_KEY)

    def _state(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM photo_sync_state WHERE key = %s",
                                (key,)).fetchone()
        self._end_read()
        return row["value"] if row else None

    def retry_entries(self, limit: int = 10000) -> list[dict]:
        """Photos that failed before, as parsed feed items (oldest failure first)."""
        rows = self.conn.execute("SELECT photo FROM photo_sync_retry ORDER BY updated_at LIMIT %s",
                                 (limit,)).fetchall()
        self._end_read()
        photos = []
        for row in rows:
            try:
                photos.append(protocol.parse_photo(row["photo"]))
            except protocol.InvalidPhoto as exc:  # written by an older agent: the feed re-sends
                log.warning("dropping a retry entry that does not validate: %s", exc)
        return photos

    def start_run(self, mode: str) -> int:
        """Record a new run (marking any run left `running` as crashed); its id."""
        with self.conn.transaction():
            # Under the run lock, any run still 'running' is one that died.
            self.conn.execute("UPDATE photo_sync_run SET status = 'crashed', error = %s, "
                              "finished_at = coalesce(finished_at, now()) "
                              "WHERE status = 'running'", (STALE_RUN_ERROR,))
            row = self.conn.execute("INSERT INTO photo_sync_run (mode, status) VALUES (%s, "
                                    "'running') RETURNING id", (mode,)).fetchone()
        return row["id"]

    def finish_run(self, run_id: int, summary: dict) -> None:
        """Record a run's outcome and counts from its summary."""
        with self.conn.transaction():
            self.conn.execute(
                "UPDATE photo_sync_run SET status = %(status)s, finished_at = now(), "
                "listed = %(listed)s, downloaded = %(downloaded)s, unchanged = %(unchanged)s, "
                "updated = %(updated)s, deleted = %(deleted)s, failed = %(failed)s, "
                "bytes = %(bytes)s, duration_seconds = %(duration)s, error = %(error)s "
                "WHERE id = %(run_id)s", {**summary, "run_id": run_id})

    # Outbox -------------------------------------------------------------------------

    def pending_reports(self, limit: int) -> list[dict]:
        """The oldest queued status reports, at most `limit`."""
        rows = self.conn.execute(
            "SELECT photo_id, version, status, synced_at, error, queued_at FROM photo_sync_outbox "
            "ORDER BY queued_at LIMIT %s", (limit,)).fetchall()
        self._end_read()
        return rows

    def pending_report_count(self) -> int:
        """How many status reports wait in the outbox."""
        n = self.conn.execute("SELECT count(*) AS n FROM photo_sync_outbox").fetchone()["n"]
        self._end_read()
        return n

    def drop_reports(self, rows: list[dict]) -> None:
        """Remove delivered entries, unless a newer outcome was queued meanwhile."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany("DELETE FROM photo_sync_outbox WHERE photo_id = %s AND queued_at = %s",
                            [(r["photo_id"], r["queued_at"]) for r in rows])

    # Status -------------------------------------------------------------------------

    def status(self) -> dict:
        """The store at a glance: counts by sync_status, bytes held, last runs, lag."""
        counts = self.conn.execute(
            f"SELECT coalesce(sync_status, 'pending') AS status, count(*) AS n, "
            f"coalesce(sum(octet_length(image_binary)), 0) AS bytes FROM {self._t} GROUP BY 1"
        ).fetchall()
        runs = self.conn.execute(
            "SELECT id, mode, status, started_at, finished_at, listed, downloaded, unchanged, "
            "updated, deleted, failed, bytes, duration_seconds, error FROM photo_sync_run "
            "ORDER BY id DESC LIMIT 10").fetchall()
        last_ok = self.conn.execute(
            "SELECT max(finished_at) AS t FROM photo_sync_run WHERE status IN ('ok', 'partial')"
        ).fetchone()["t"]
        failures = self.conn.execute(
            f"SELECT id, sync_error FROM {self._t} WHERE sync_status = 'failed' "
            "ORDER BY id LIMIT 20").fetchall()
        now = self.conn.execute("SELECT now() AS t").fetchone()["t"]
        self._end_read()
        return {
            "photos": sum(r["n"] for r in counts),
            "counts_by_status": {r["status"]: r["n"] for r in counts},
            "bytes_held": int(sum(r["bytes"] for r in counts)),
            "last_success_at": last_ok.isoformat() if last_ok else None,
            "lag_seconds": round((now - last_ok).total_seconds(), 1) if last_ok else None,
            "cursor": self.get_cursor(),
            "pending_reports": self.pending_report_count(),
            "failures": [{"photo_id": str(r["id"]), "error": r["sync_error"]} for r in failures],
            "last_runs": [{**r, "started_at": r["started_at"].isoformat(),
                           "finished_at": (r["finished_at"].isoformat()
                                           if r["finished_at"] else None)}
                          for r in runs],
        }

    # Reset (rollback) ---------------------------------------------------------------

    def reset_queries(self) -> dict[str, str]:
        """The statements `reset()` runs, by the count each one answers (for `queries`)."""
        return {
            "reset": f"UPDATE {self._t} SET sync_status = 'pending', sync_error = NULL "
                     "WHERE sync_status IS DISTINCT FROM 'pending'",
            "cleared": f"UPDATE {self._t} SET image_binary = NULL WHERE image_binary IS NOT NULL",
        }

    def reset(self, clear_bytes: bool = False, dry_run: bool = False) -> dict:
        """Put every photo back to `pending` (and with clear_bytes drop the bytes held), as a
        rollback does; returns the rows each step changed, or would change in a dry run."""
        queries = self.reset_queries()
        counts = {"reset": 0, "cleared": 0}
        try:
            # A sync run writing meanwhile would mark rows synced again behind our back.
            # The transaction-level try-lock conflicts with the run's session lock and
            # ends with this transaction, dry run included: a dry run fails where a real
            # one would.
            got = self.conn.execute(
                f"SELECT pg_try_advisory_xact_lock({LOCK_KEY_SQL}) AS got").fetchone()["got"]
            if not got:
                raise LockHeld("a photo-sync run is in progress on this database, so nothing "
                               "was reset: stop the sync timers and service, then try again")
            # A store never migrated (or already rolled back) has nothing to reset: zero
            # counts, not an error, so a rollback can be re-run.
            columns = schema._table_columns(self.conn, self.table)
            if {"sync_status", "sync_error"} <= columns.keys():
                counts["reset"] = self.conn.execute(queries["reset"]).rowcount
            if clear_bytes and "image_binary" in columns:
                counts["cleared"] = self.conn.execute(queries["cleared"]).rowcount
        except BaseException:
            self.conn.rollback()
            raise
        if dry_run:
            self.conn.rollback()
        else:
            self.conn.commit()
        return counts

    # Operations: verify and the photo server (issue 11) ------------------------------
    # Read-mostly SQL for `photo-sync-edge verify` and `photo_sync.edge.serve`; the
    # bytes never leave PostgreSQL for a verify (md5() runs in the database).

    def verify_rows(self, part: int = 0, parts: int = 1) -> list[dict]:
        """Every row as verify needs it: version, checksum, whether bytes are held, and
        the MD5 of those bytes computed inside PostgreSQL (no bytes cross the wire). With
        `parts` > 1, only the rows of share `part` (0-based) of the id space, so several
        sessions can hash the table in parallel."""
        where, params = "", ()
        if parts > 1:
            # Split on the id's first byte: the shares are disjoint and cover every id.
            where = "WHERE get_byte(uuid_send(id), 0) %% %s = %s"
            params = (parts, part)
        rows = self.conn.execute(
            f"SELECT id, version, checksum, sync_status, image_binary IS NOT NULL AS has_bytes, "
            f"md5(image_binary) AS stored_md5 FROM {self._t} {where}", params).fetchall()
        self.conn.commit()
        return rows

    def mark_for_repair(self, photos: list[tuple[dict, str]]) -> int:
        """Queue photos (HO's listing item, the drift verify found) for the next pull of
        any mode: the row (if any) goes back to 'pending' and the listing item into
        `photo_sync_retry`, which every run works through first. Bytes stay untouched
        until a verified download replaces them. Returns how many were marked."""
        if not photos:
            return 0
        ids = [uuid.UUID(str(p["id"])) for p, _ in photos]
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(f"UPDATE {self._t} SET sync_status = 'pending', sync_error = %s "
                        "WHERE id = ANY(%s)", ("verify found drift; the next pull repairs it",
                                               ids))
            # The same JSON mark_failed() queues: the listing item without its presigned
            # URL (it would expire before the next run).
            cur.executemany(
                "INSERT INTO photo_sync_retry (photo_id, photo, last_error) VALUES (%s, %s, %s) "
                "ON CONFLICT (photo_id) DO UPDATE SET photo = EXCLUDED.photo, "
                "last_error = EXCLUDED.last_error, updated_at = now()",
                [(photo_id, json.dumps({k: (str(v) if isinstance(v, uuid.UUID) else v)
                                        for k, v in p.items()
                                        if k not in protocol.SHORT_LIVED_FIELDS}),
                  f"verify: {kind}") for photo_id, (p, kind) in zip(ids, photos)])
            # HO's fleet view should count them as not synced until the pull lands.
            self._queue(cur, [(photo_id, int(p.get("version") or 0), protocol.STATUS_PENDING,
                               None, f"verify: {kind}")
                              for photo_id, (p, kind) in zip(ids, photos)])
        return len(ids)

    def database_size(self) -> int:
        """Bytes the store database takes on disk (for the storage alert's metric)."""
        n = self.conn.execute("SELECT pg_database_size(current_database()) AS n").fetchone()["n"]
        self.conn.commit()
        return int(n)

    def data_directory(self) -> str | None:
        """PostgreSQL's data directory (for the storage alert's file system), or None when
        the server is on another machine (reached over TCP to a host that is not loopback:
        the path would name a file system of that host) or this role may not see it:
        pg_settings hides it from roles that are neither superuser nor members of
        pg_read_all_settings."""
        host = self.conn.info.host or ""
        if not (host.startswith("/") or is_loopback(host)):
            return None
        row = self.conn.execute(
            "SELECT setting FROM pg_settings WHERE name = 'data_directory'").fetchone()
        self.conn.commit()
        return row["setting"] if row else None

    @staticmethod
    def serve_photo(conn, table: str, photo_id: uuid.UUID, with_bytes: bool) -> dict | None:
        """One photo for the store's photo server; `data` only when `with_bytes` and the
        photo is synced. Binary results: the bytes arrive raw, not hex-escaped."""
        t = sql.Identifier(table).as_string(conn)
        data = "CASE WHEN sync_status = 'synced' THEN image_binary END" if with_bytes else "NULL"
        with conn.cursor(row_factory=dict_row, binary=True) as cur:
            cur.execute(
                f"SELECT id, object_key, content_type, checksum, sync_status, "
                f"coalesce(updated_at, last_sync_at) AS modified, "
                f"image_binary IS NOT NULL AND sync_status = 'synced' AS held, "
                # The stored length (from the TOAST pointer: the bytes are not read).
                f"octet_length(image_binary) AS nbytes, "
                f"{data} AS data FROM {t} WHERE id = %s", (photo_id,))
            return cur.fetchone()

    @staticmethod
    def serve_product_photos(conn, table: str, product_id: uuid.UUID) -> list[dict]:
        """A product's photos in display order: primary first, then sort_order."""
        # The served fields of the field table, and the checksum their URLs carry.
        names = [f.name for f in protocol.edge_fields() if f.serve or f.name == "checksum"]
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql.SQL(
                "SELECT {cols}, image_binary IS NOT NULL AND sync_status = 'synced' AS held "
                "FROM {t} WHERE product_id = %s ORDER BY is_primary DESC NULLS LAST, "
                "sort_order NULLS LAST, id").format(cols=_names(names), t=sql.Identifier(table)),
                (product_id,))
            return cur.fetchall()
