"""The store's photo mirror: the synced photos as files, which nginx (or the photo server)
sends without reading the database.

The invariant: a file in the mirror holds exactly the bytes its name says. Each photo's
bytes live in `objects/<md5>.<ext>/photo.<ext>`, a folder named by the bytes' MD5 and their
type, written under a temporary name only after the bytes hashed to that MD5 and renamed
into place, so a reader never sees half a file and a name never holds other bytes.
`ids/<photo id>` is a symbolic link to the folder of the photo's current bytes. A server
resolves the link, takes the ETag (the MD5) and Content-Type from the folder's name and
opens the file inside; a file that is gone by then is a miss, answered from the database.

The mirror is written only here, by the sync agent after each run (`refresh`), from the
database, which stays the source of truth:

- a held photo whose link does not name its current bytes gets a new object and the link
  is swapped atomically (rename over it); the old object goes once no link names it, so a
  replaced photo's old file goes at the next sync;
- a photo that is no longer held (HO deleted it, or it was reset to pending) loses its
  link: the link is first pointed at `objects/gone` (a folder that names no bytes, which
  servers treat as a miss) and removed a day later, so a request that resolved the link
  an instant before never finds it half-removed;
- the mirror is bounded: at most `max_bytes` of photos, the most recently changed first,
  and it never writes when the file system's free space would drop below `min_free_bytes`
  (the store's PostgreSQL may share that disk); when free space is already below the floor,
  the oldest photos are dropped until it is back above it or the mirror is empty.

Photos of other types than JPEG, PNG, WebP and GIF, or whose checksum is not an MD5, are
never mirrored: the photo server answers them from the database.

A refresh walks the whole table only when it must. After each refresh the agent records
what the mirror then was in `.state` (the budget and floor it kept, its photos and bytes,
and the identity and mtime of `ids/` and `objects/`, which change whenever an entry is
added or removed). A sync run that changed nothing then touches neither the table nor the
files, and one that changed photos reads only those rows (`refresh_after_sync` is handed
their ids). The table is walked again (`refresh`) whenever that record cannot be trusted:
no record yet (first run, the cache dir wiped), a folder changed behind the agent's back
(an object removed), another budget or floor, a mirror left incomplete (photos skipped
for free space or not written), free space below the floor, a change that would take the
mirror over its budget (the budget keeps the newest, which only the walk knows), ids the
run could not name, or a record older than FULL_WALK_SECONDS (the table's writers outside
a sync run, such as `reset` or hand-made SQL, are seen by that walk at the latest).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

log = logging.getLogger(__name__)

# The types a mirror holds, by the extension nginx maps back to the same Content-Type.
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp",
              "image/gif": "gif"}
GONE = "gone"
# A link pointed at `gone` is removed after this long (no request takes a day).
GONE_SECONDS = 24 * 3600
# A record older than this is not trusted: the table is walked again (at most daily).
FULL_WALK_SECONDS = 24 * 3600
STATE = ".state"
_STATE_FORMAT = 1
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_OBJECT = re.compile(r"^([0-9a-f]{32})\.(jpg|png|webp|gif)$")


def object_name(checksum: str | None, content_type: str | None) -> str | None:
    """`<md5>.<ext>` for a photo's bytes, or None when the mirror does not hold this kind."""
    # Exact names only: nginx answers with these very words, as the photo server would.
    ext = EXTENSIONS.get(content_type or "")
    checksum = (checksum or "").lower()
    if ext is None or not _MD5.match(checksum):
        return None
    return f"{checksum}.{ext}"


def object_file(mirror_dir: str | os.PathLike, name: str) -> Path:
    """The file holding the bytes of object `name` (`<md5>.<ext>`)."""
    return Path(mirror_dir) / "objects" / name / f"photo.{name.rsplit('.', 1)[1]}"


@dataclass
class RefreshResult:
    written: int = 0  # objects written
    removed: int = 0  # objects removed (replaced, deleted, over the budget or the floor)
    linked: int = 0  # photos the mirror answers for after the refresh
    bytes: int = 0  # bytes of those photos
    skipped_for_space: int = 0  # photos left out: free space would fall (or fell) below the floor
    skipped_for_budget: int = 0  # photos left out: over max_bytes
    unwritten: int = 0  # photos not written (bytes changed meanwhile, a write failed)
    rows_read: int = 0  # rows of the photo table read (0: the table was not read)
    walk: str = "full"  # full (every held row) | changed (the run's ids) | none
    walked_at: float = 0.0  # when the table was last walked (time.time())
    gone_due: float | None = None  # when the oldest link to `gone` is due for removal


def free_bytes(path: str | os.PathLike) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class Mirror:
    """One refresh of one mirror folder from the store's photo table."""

    def __init__(self, mirror_dir: str | os.PathLike, max_bytes: int, min_free_bytes: int):
        self.root = Path(mirror_dir)
        self.ids = self.root / "ids"
        self.objects = self.root / "objects"
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes

    def refresh(self, conn: psycopg.Connection, table: str) -> RefreshResult | None:
        """Bring the mirror to the table's held photos, walking every held row; None when
        another refresh holds it. Whoever calls this outside a sync run may have changed
        the table in ways no run knows of: the agent's next refresh walks it again."""
        with self._locked() as locked:
            if not locked:
                return None
            self._forget_state()
            return self._refresh(conn, table)

    def refresh_changed(self, connect, table: str, changed: set[uuid.UUID] | None
                        ) -> RefreshResult | None:
        """The agent's refresh after a run that changed the photos `changed` (None: the
        run could not say which): only those rows are read when the recorded state can be
        trusted, nothing at all when `changed` is empty, else every held row. `connect()`
        gives the connection, opened only when the table is read. None when another
        refresh holds the mirror."""
        with self._locked() as locked:
            if not locked:
                return None
            state = self._trusted_state()
            if state is not None and changed is not None and not changed:
                return self._refresh_nothing(state)
            with connect() as conn:
                result = None
                if state is not None and changed is not None and \
                        state["skipped_for_budget"] == 0:
                    # Nothing left out for the budget: every held photo is mirrored, so
                    # a change that fits the budget needs no ordering of the rest.
                    self._forget_state()
                    result = self._refresh_ids(conn, table, state, changed)
                if result is None or free_bytes(self.root) < self.min_free_bytes:
                    self._forget_state()
                    result = self._refresh(conn, table)
            self._record_state(result)
            return result

    @contextlib.contextmanager
    def _locked(self):
        self.root.mkdir(mode=0o755, exist_ok=True)
        for folder in (self.ids, self.objects, self.objects / GONE):
            folder.mkdir(exist_ok=True)
            # nginx and the photo server read as other users (the agent's umask is 0077).
            folder.chmod(0o755)
        with open(self.root / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True

    # The recorded state ------------------------------------------------------------------

    def _stamps(self) -> list[list[int]]:
        """What changes when an entry of `ids/` or `objects/` is added or removed (or the
        folder is replaced): inode, mtime and link count of each."""
        out = []
        for folder in (self.ids, self.objects):
            st = folder.stat()
            out.append([st.st_ino, st.st_mtime_ns, st.st_nlink])
        return out

    def _forget_state(self) -> None:
        """Before the mirror is written: a refresh that dies midway leaves no record."""
        with contextlib.suppress(FileNotFoundError):
            (self.root / STATE).unlink()

    def _record_state(self, result: RefreshResult) -> None:
        """Record the mirror a refresh left, when the next refresh may trust it: complete,
        and the record's own block does not take free space below the floor."""
        if result.skipped_for_space or result.unwritten:
            return  # incomplete: the next refresh walks the table anyway
        if free_bytes(self.root) - 2 * os.statvfs(self.root).f_bsize < self.min_free_bytes:
            return
        state = {"format": _STATE_FORMAT, "max_bytes": self.max_bytes,
                 "min_free_bytes": self.min_free_bytes,
                 "linked": result.linked, "bytes": result.bytes,
                 "skipped_for_budget": result.skipped_for_budget,
                 "walked_at": result.walked_at,
                 "gone_due": (result.gone_due if result.walk != "full" else self._gone_due()),
                 "stamps": self._stamps()}
        tmp = self.root / f".tmp-state-{uuid.uuid4().hex}"
        try:
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.root / STATE)
        except OSError as exc:  # no record: the next refresh walks the table
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.warning("photo mirror: state not recorded (%s)", exc.strerror)

    def _trusted_state(self) -> dict | None:
        """The recorded state when it still describes the mirror and its settings."""
        try:
            state = json.loads((self.root / STATE).read_text())
            numbers = [state[k] for k in ("linked", "bytes", "skipped_for_budget",
                                          "walked_at")]
            if state["gone_due"] is not None:
                numbers.append(state["gone_due"])
            trusted = (all(isinstance(n, (int, float)) for n in numbers)
                       and state["format"] == _STATE_FORMAT
                       and state["max_bytes"] == self.max_bytes
                       and state["min_free_bytes"] == self.min_free_bytes
                       and state["stamps"] == self._stamps()
                       and time.time() - state["walked_at"] < FULL_WALK_SECONDS
                       and free_bytes(self.root) >= self.min_free_bytes)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return state if trusted else None

    def _gone_due(self) -> float | None:
        """When the oldest link pointed at `gone` is due for removal (None: there is none)."""
        times = []
        for entry in os.scandir(self.ids):
            with contextlib.suppress(OSError):
                if (not entry.name.startswith(".") and entry.is_symlink()
                        and os.path.basename(os.readlink(entry.path)) == GONE):
                    times.append(entry.stat(follow_symlinks=False).st_mtime)
        return min(times) + GONE_SECONDS if times else None

    # Refreshes ---------------------------------------------------------------------------

    def _refresh_nothing(self, state: dict) -> RefreshResult:
        """A run that changed nothing: the files stay as they are, the table is not read;
        only links pointed at `gone` a day ago are removed, when one is due."""
        result = RefreshResult(linked=state["linked"], bytes=state["bytes"],
                               skipped_for_budget=state["skipped_for_budget"], walk="none",
                               walked_at=state["walked_at"], gone_due=state["gone_due"])
        if state["gone_due"] is not None and state["gone_due"] <= time.time():
            self._remove_old_gone_links()
            result.gone_due = self._gone_due()
            self._record_state(result)
        return result

    def _refresh_ids(self, conn, table: str, state: dict, changed: set[uuid.UUID]
                     ) -> RefreshResult | None:
        """Only the changed photos, on a mirror that holds every other held photo; None
        when the change would take it over its budget (the full walk decides then)."""
        rows = {row["id"]: row for row in _held(conn, table, sorted(changed))}
        result = RefreshResult(walk="changed", rows_read=len(rows),
                               walked_at=state["walked_at"])
        # (photo id, object linked now, its bytes, object wanted, row), before any write.
        plan = []
        for photo_id in changed:
            key = str(photo_id)
            try:
                current = os.path.basename(os.readlink(self.ids / key))
            except OSError:
                current = None
            current = None if current == GONE else current
            size = 0
            if current is not None:
                try:
                    size = object_file(self.root, current).stat().st_size
                except OSError:
                    return None  # the record is wrong after all
            row = rows.get(photo_id)
            wanted = object_name(row["checksum"], row["content_type"]) if row else None
            plan.append((key, current, size, wanted, row))
        linked = state["linked"] - sum(1 for p in plan if p[1] is not None)
        total = state["bytes"] - sum(p[2] for p in plan)
        if total + sum(p[4]["nbytes"] for p in plan if p[3] is not None) > self.max_bytes:
            return None
        old_names, gone_due = set(), state["gone_due"]
        for key, current, _, wanted, row in plan:
            if wanted is not None and not (self.objects / wanted).is_dir():
                if free_bytes(self.root) - row["nbytes"] < self.min_free_bytes:
                    result.skipped_for_space += 1
                    wanted = None
                elif not self._write(conn, table, row["id"], wanted, row):
                    result.unwritten += 1
                    wanted = None
                else:
                    result.written += 1
            if wanted is not None:
                if wanted != current:
                    self._link(key, wanted)
                linked += 1
                total += row["nbytes"]
            elif current is not None:
                self._link(key, GONE)
                gone_due = min(gone_due or float("inf"), time.time() + GONE_SECONDS)
            if current is not None and current != wanted:
                old_names.add(current)
        if old_names:
            # An object goes once no link names it (another photo may hold the same bytes).
            named = set(self._links().values())
            for name in old_names - named:
                shutil.rmtree(self.objects / name, ignore_errors=True)
                result.removed += 1
        result.linked, result.bytes = linked, total
        result.skipped_for_budget = state["skipped_for_budget"]
        result.gone_due = gone_due
        return result

    def _refresh(self, conn, table: str) -> RefreshResult:
        result = RefreshResult(walked_at=time.time())
        self._clear_temporaries()
        # Newest first: the budget keeps the photos that changed last.
        wanted: list[tuple[uuid.UUID, str, dict]] = []
        total = 0
        for row in _held(conn, table):
            result.rows_read += 1
            name = object_name(row["checksum"], row["content_type"])
            if name is None:
                continue
            if total + row["nbytes"] > self.max_bytes:
                result.skipped_for_budget += 1
                continue
            total += row["nbytes"]
            wanted.append((row["id"], name, row))
        linked = self._links()
        kept: list[tuple[str, str, int]] = []  # (photo id, object name, bytes), newest first
        for photo_id, name, row in wanted:
            key = str(photo_id)
            present = (self.objects / name).is_dir()
            if linked.get(key) != name or not present:
                if not present:
                    if free_bytes(self.root) - row["nbytes"] < self.min_free_bytes:
                        result.skipped_for_space += 1
                        continue
                    if not self._write(conn, table, photo_id, name, row):
                        result.unwritten += 1
                        continue
                    result.written += 1
                self._link(key, name)
            kept.append((key, name, row["nbytes"]))
        keep_ids = {key for key, _, _ in kept}
        for key, target in linked.items():
            if key not in keep_ids and target != GONE:
                self._link(key, GONE)
        # Below the floor (the database grew, or another file did): give space back, oldest
        # photos first.
        uses = collections.Counter(name for _, name, _ in kept)
        while kept and free_bytes(self.root) < self.min_free_bytes:
            key, name, _ = kept.pop()
            self._link(key, GONE)
            result.skipped_for_space += 1  # left out for free space: the next walk retries
            uses[name] -= 1
            if not uses[name]:
                shutil.rmtree(self.objects / name, ignore_errors=True)
                result.removed += 1
        result.removed += self._remove_unlinked({n for _, n, _ in kept})
        self._remove_old_gone_links()
        result.linked = len(kept)
        result.bytes = sum(n for _, _, n in kept)
        return result

    def _links(self) -> dict[str, str]:
        """{photo id: object name} of every link (`gone` included)."""
        links = {}
        for entry in os.scandir(self.ids):
            if entry.name.startswith("."):
                continue
            try:
                links[entry.name] = os.path.basename(os.readlink(entry.path))
            except OSError:  # not a link: not ours, never served (nginx resolves links only)
                continue
        return links

    def _link(self, key: str, name: str) -> None:
        tmp = self.ids / f".tmp-{uuid.uuid4().hex}"
        os.symlink(f"../objects/{name}", tmp)
        os.replace(tmp, self.ids / key)

    def _write(self, conn, table: str, photo_id: uuid.UUID, name: str, row: dict) -> bool:
        data = _bytes(conn, table, photo_id)
        if data is None or hashlib.md5(data, usedforsecurity=False).hexdigest() != name[:32]:
            # Changed since the listing, or bytes that do not match their checksum (verify
            # names those): the database answers for this photo.
            return False
        folder = Path(tempfile.mkdtemp(dir=self.objects, prefix=".tmp-"))
        try:
            target = folder / f"photo.{name.rsplit('.', 1)[1]}"
            with open(target, "wb") as out:
                out.write(data)
            target.chmod(0o644)
            # Last-Modified: nginx sends the file's mtime, the photo server the row's time.
            if row["modified"] is not None:
                stamp = row["modified"].timestamp()
                os.utime(target, (stamp, stamp))
            folder.chmod(0o755)
            os.rename(folder, self.objects / name)
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            if (self.objects / name).is_dir():
                return True  # the same bytes were written for another photo meanwhile
            # A full disk costs speed, never a sync.
            log.warning("photo mirror: %s not written (%s)", photo_id, exc.strerror)
            return False
        return True

    def _remove_unlinked(self, keep: set[str]) -> int:
        named = set(self._links().values())
        removed = 0
        for entry in os.scandir(self.objects):
            if entry.name in (GONE,) or entry.name.startswith("."):
                continue
            if entry.name not in keep and entry.name not in named:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
        return removed

    def _remove_old_gone_links(self) -> None:
        cutoff = time.time() - GONE_SECONDS
        for key, target in self._links().items():
            path = self.ids / key
            with contextlib.suppress(OSError):
                if target == GONE and path.lstat().st_mtime < cutoff:
                    path.unlink()

    def _clear_temporaries(self) -> None:
        """What a refresh that was killed left behind."""
        for folder in (self.root, self.ids, self.objects):
            for entry in os.scandir(folder):
                if entry.name.startswith(".tmp-"):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)


def _held(conn, table: str, ids: list[uuid.UUID] | None = None) -> list[dict]:
    """The held photos (those of `ids` only, when given), newest first."""
    only = sql.SQL("AND id = ANY(%s) " if ids is not None else "")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL(
            "SELECT id, checksum, content_type, octet_length(image_binary) AS nbytes, "
            "coalesce(updated_at, last_sync_at) AS modified FROM {t} "
            "WHERE image_binary IS NOT NULL AND sync_status = 'synced' {only}"
            "ORDER BY modified DESC NULLS LAST, id").format(t=sql.Identifier(table), only=only),
            (ids,) if ids is not None else None)
        return cur.fetchall()


def _bytes(conn, table: str, photo_id: uuid.UUID) -> bytes | None:
    with conn.cursor(binary=True) as cur:
        cur.execute(sql.SQL("SELECT image_binary FROM {t} WHERE id = %s AND "
                            "sync_status = 'synced'").format(t=sql.Identifier(table)),
                    (photo_id,))
        row = cur.fetchone()
    return bytes(row[0]) if row and row[0] is not None else None


def changed_ids(summary) -> set[uuid.UUID] | None:
    """The photos a run wrote, rewrote, deleted or marked failed, from its summary (`ids`
    and the failures listed); None when the summary cannot name them all."""
    if summary.ids is None or summary.failed > len(summary.failures):
        return None
    changed = set()
    try:
        for kind in ("download", "update", "delete"):
            changed.update(uuid.UUID(str(i)) for i in summary.ids[kind])
    except (KeyError, ValueError):
        return None
    for failure in summary.failures:
        # A feed item whose id is no UUID names no row.
        with contextlib.suppress(ValueError, TypeError):
            changed.add(uuid.UUID(str(failure["photo_id"])))
    return changed


def refresh_after_sync(settings, changed: set[uuid.UUID] | None = None
                       ) -> RefreshResult | None:
    """The agent's step after a sync run: refresh the mirror when one is configured
    (PHOTO_SYNC_EDGE_SERVE_CACHE_DIR), reading only the rows of `changed` (the photos the
    run changed; None: unknown, so every held row) when the mirror's record allows. A
    mirror that cannot be written costs speed, never the run: the failure is logged and
    the photo server answers from the database.

    The refresh has a connection of its own, opened only when the table is read: the
    run's connection is closed (and its run lock released with it) when the run records
    its summary, before this step."""
    if not settings.serve_cache_dir:
        return None
    from photo_sync import db

    def connect():
        return psycopg.connect(settings.database_url, autocommit=True,
                               **db.connect_kwargs(60_000, 60_000))
    try:
        result = Mirror(settings.serve_cache_dir, settings.serve_cache_max_bytes,
                        settings.serve_cache_min_free_bytes).refresh_changed(
            connect, settings.table, changed)
    except (OSError, psycopg.Error) as exc:
        log.warning("photo mirror in %s not refreshed (%s): the photo server answers from "
                    "the database", settings.serve_cache_dir,
                    getattr(exc, "strerror", None) or type(exc).__name__)
        return None
    if result is not None:
        log.info("photo mirror: %d photos (%d bytes), %d written, %d removed, %d left out "
                 "over the budget, %d for free space; %d rows read (walk: %s)",
                 result.linked, result.bytes, result.written, result.removed,
                 result.skipped_for_budget, result.skipped_for_space, result.rows_read,
                 result.walk)
    return result
