"""`photo-sync-edge verify [--json] [--repair]`: does the store still hold what HO lists?

No photo bytes cross the WAN: HO's listing gives each live photo's version and
checksum (metadata only), and PostgreSQL hashes the stored bytes itself
(`md5(image_binary)`). Each photo that differs is named under one kind, the
first that applies:

- missing: HO lists it; the store holds no bytes for it (no row, or a row without bytes)
- corrupt: the stored bytes do not hash to the checksum stored beside them
- stale:   the store holds another version or checksum than HO lists
- extra:   the store holds a photo HO does not list

`--repair` marks missing, corrupt and stale photos so that the next `pull` of any
mode downloads them (retry queue, status back to `pending`); nothing is deleted
and no bytes are touched until a verified download replaces them. Extras are
left to a full pull, whose delete guard (`MAX_DELETE_FRACTION`) decides. `--repair`
takes the run lock, so it waits for no pull: exit 3 while one runs.

Exit codes: 0 the store matches HO; 1 drift found (also after `--repair` marked it);
2 configuration or database; 3 run lock held; 4 HO unreachable or refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from photo_sync import db, protocol
from photo_sync.edge import metrics
from photo_sync.edge.client import HOClient
from photo_sync.edge.settings import EdgeSettings
from photo_sync.edge.store import EdgeStore
from photo_sync.errors import EXIT_OK, EXIT_PARTIAL, HOUnreachable

log = logging.getLogger(__name__)

KINDS = ("missing", "extra", "stale", "corrupt")
MAX_PAGES = 1_000_000  # a bound on the walk; 500 million photos at the default page size
IDS_SHOWN = 20
# Sessions hashing the stored bytes side by side (md5() in one backend runs on one core).
HASH_SESSIONS = 2


@dataclass
class VerifyResult:
    """What a verify found: HO's live photo count, the store's row count, ids per kind."""

    listed: int = 0
    held: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    repaired: int | None = None
    duration: float = 0.0

    @property
    def matches(self) -> bool:
        """True when the store holds exactly HO's live photos with the right bytes."""
        return not any(getattr(self, kind) for kind in KINDS)

    def as_dict(self) -> dict:
        """The `--json` shape (see the module docstring for the kinds)."""
        return {"matches": self.matches, "listed": self.listed, "held": self.held,
                "counts": {kind: len(getattr(self, kind)) for kind in KINDS},
                **{kind: getattr(self, kind) for kind in KINDS},
                "repaired": self.repaired, "duration": self.duration}


def ho_live_photos(client: HOClient, page_size: int) -> dict[uuid.UUID, dict]:
    """HO's live photos by id, walked as a full pull walks them: the listing from offset 0,
    then the change feed from its cursor (a change during the walk shows up again later
    in the feed, so the last word on each photo wins; tombstones remove it)."""
    photos: dict[uuid.UUID, dict] = {}
    page = _page(client.list_page(offset=0, limit=page_size))
    for _ in range(MAX_PAGES):
        for raw in page["photos"]:
            # Checked where a pull checks it: an item that does not validate is not
            # trusted, and its row (if any) shows up as extra rather than as matching.
            try:
                item = protocol.parse_photo(raw)
            except protocol.InvalidPhoto as exc:
                log.warning("HO listed a photo that does not validate: %s", exc)
                continue
            if item.get("deleted"):
                photos.pop(item["id"], None)
            else:
                photos[item["id"]] = raw
        if not page["has_more"]:
            return photos
        page = _page(client.list_page(cursor=page["next_cursor"], limit=page_size))
    raise RuntimeError(f"HO's listing did not end after {MAX_PAGES} pages")


def _page(body) -> dict:
    try:
        return protocol.parse_page(body)
    except protocol.InvalidPage as exc:
        raise HOUnreachable(f"HO sent a photo list page that does not validate ({exc}): "
                            "check HO's version and logs") from None


def compare(ho: dict[uuid.UUID, dict], rows: list[dict]) -> tuple[VerifyResult, list]:
    """Classify every photo; returns the result and the (listing item, kind) pairs a
    repair would queue."""
    result = VerifyResult(listed=len(ho), held=len(rows))
    to_repair: list[tuple[dict, str]] = []
    held = {row["id"]: row for row in rows}
    for photo_id, item in ho.items():
        row = held.get(photo_id)
        if row is None or not row["has_bytes"]:
            kind = "missing"
        elif row["stored_md5"] != (row["checksum"] or "").lower():
            kind = "corrupt"
        elif row["version"] != item.get("version") or row["checksum"] != item.get("checksum"):
            kind = "stale"
        else:
            continue
        getattr(result, kind).append(str(photo_id))
        to_repair.append((item, kind))
    result.extra = [str(photo_id) for photo_id in held if photo_id not in ho]
    for kind in KINDS:
        getattr(result, kind).sort()
    return result, to_repair


def verify(settings: EdgeSettings, repair: bool = False, client: HOClient | None = None
           ) -> VerifyResult:
    """Compare the store with HO; with `repair`, queue what differs for the next pull."""
    started = time.monotonic()
    try:
        store = EdgeStore(settings.database_url, settings.table)
    except psycopg.OperationalError as exc:
        raise db.unavailable(exc, "PHOTO_SYNC_EDGE_DATABASE_URL") from None
    client = client or HOClient.from_settings(settings, pool_size=2)
    try:
        store.check_schema()
        if repair:
            # A pull running meanwhile would race the retry queue: one at a time.
            store.acquire_run_lock()
        # An HO that refuses or cannot be reached ends the verify before any hashing.
        client.authenticate()
        # PostgreSQL hashes the stored bytes (in HASH_SESSIONS sessions) while HO's listing
        # is walked: the two waits overlap instead of adding up.
        with ThreadPoolExecutor(max_workers=HASH_SESSIONS, thread_name_prefix="hash") as pool:
            hashed = [pool.submit(_hash_rows, settings, part) for part in range(HASH_SESSIONS)]
            ho = ho_live_photos(client, settings.page_size)
            rows = [row for job in hashed for row in job.result()]
        result, to_repair = compare(ho, rows)
        if repair:
            result.repaired = store.mark_for_repair(to_repair)
        result.duration = round(time.monotonic() - started, 3)
        if settings.metrics_file:
            metrics.write_verify(verify_metrics_path(settings.metrics_file), result)
        return result
    except psycopg.OperationalError as exc:
        raise db.unavailable(exc, "PHOTO_SYNC_EDGE_DATABASE_URL") from None
    finally:
        store.close()
        client.close()


def _hash_rows(settings: EdgeSettings, part: int) -> list[dict]:
    """One share of `verify_rows`, on a session of its own."""
    store = EdgeStore(settings.database_url, settings.table)
    try:
        return store.verify_rows(part, HASH_SESSIONS)
    finally:
        store.close()


def verify_metrics_path(metrics_file: str) -> str:
    """Verify's textfile beside the pull's (`photo_sync.prom` -> `photo_sync_verify.prom`):
    node_exporter's textfile collector reads every `*.prom` in that folder."""
    path = Path(metrics_file)
    return str(path.with_name(f"{path.stem}_verify{path.suffix or '.prom'}"))


# CLI ------------------------------------------------------------------------------------

def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `verify` on the `photo-sync-edge` subcommands."""
    parser = subparsers.add_parser(
        "verify", help="compare the store with HO without downloading bytes (exit 1 on drift)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print counts and ids as JSON")
    parser.add_argument("--repair", action="store_true",
                        help="mark missing, stale and corrupt photos for the next pull")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """`photo-sync-edge verify`: 0 when the store matches HO, 1 when it found drift."""
    settings = EdgeSettings.load(getattr(args, "config", None))
    result = verify(settings, repair=args.repair)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print_table(result)
    return EXIT_OK if result.matches else EXIT_PARTIAL


def print_table(result: VerifyResult) -> None:
    """The operator's view: one line per kind, the first ids of each."""
    verdict = "matches HO" if result.matches else "differs from HO"
    print(f"store {verdict}: HO lists {result.listed} photos, the store holds {result.held} "
          f"(checked in {result.duration:.1f}s)")
    print(f"{'kind':8} {'count':>7}  ids")
    for kind in KINDS:
        ids = getattr(result, kind)
        shown = " ".join(ids[:IDS_SHOWN]) + (f" ... (+{len(ids) - IDS_SHOWN})"
                                              if len(ids) > IDS_SHOWN else "")
        print(f"{kind:8} {len(ids):7}  {shown}")
    if result.repaired is not None:
        print(f"marked {result.repaired} photos for the next pull (any mode)")
        if result.extra:
            print(f"{len(result.extra)} extra photos are left for a full pull "
                  "(`photo-sync-edge pull --mode full`), under its delete guard")
    elif not result.matches:
        print("run `photo-sync-edge verify --repair`, then `photo-sync-edge pull`")
