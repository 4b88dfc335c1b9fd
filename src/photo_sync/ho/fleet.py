"""`photo-sync-ho fleet [--json] [--stale-after HOURS]`: every store against the catalog.

HO knows a store only by what it reports (`photo_sync_status`, the newest report
per photo). Per store this shows: its last report, the live catalog photos it
reported synced at their current version, failed, and pending (everything else:
never reported, an older version, a pending mark from verify), tombstones it
held and has not reported deleted, its lag (age of the oldest catalog change it
has not reported synced), and its last error.

A store is **silent** when it is active and has reported nothing for longer than
`--stale-after` while a change older than that still waits for it (or it has never
reported at all). A run that finds nothing to change reports nothing, so an
up-to-date store that is quiet is not silent.

The lag is computed only for stores that are behind, so an up-to-date fleet costs
one pass over the status table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

import psycopg

from photo_sync import db
from photo_sync.errors import ConfigError
from photo_sync.ho import catalog
from photo_sync.ho.settings import HOSettings

SETTING = "PHOTO_SYNC_HO_DATABASE_URL"
DEFAULT_STALE_HOURS = 24.0

_STORES = """
WITH live AS (SELECT id, version FROM product_photo WHERE deleted_at IS NULL)
SELECT s.id, s.name, s.active,
       (SELECT max(reported_at) FROM photo_sync_status a WHERE a.store_id = s.id)
           AS last_report_at,
       count(l.id) FILTER (WHERE st.status = 'synced' AND st.version >= l.version) AS synced,
       count(l.id) FILTER (WHERE st.status = 'failed') AS failed,
       (SELECT count(*) FROM photo_sync_status d JOIN product_photo p ON p.id = d.photo_id
         WHERE d.store_id = s.id AND p.deleted_at IS NOT NULL AND d.status <> 'deleted')
           AS deletions_pending
FROM sync_store s
LEFT JOIN photo_sync_status st ON st.store_id = s.id
LEFT JOIN live l ON l.id = st.photo_id
GROUP BY s.id
ORDER BY s.name, s.id
"""

# The oldest change a store has not reported synced: a live photo without a 'synced'
# report at its current version, or a tombstone of a photo it held and still holds.
_OLDEST_UNSYNCED = """
SELECT min(t) AS oldest FROM (
    (SELECT p.updated_at AS t FROM product_photo p
      WHERE p.deleted_at IS NULL AND NOT EXISTS (
            SELECT 1 FROM photo_sync_status st WHERE st.store_id = %(store)s
               AND st.photo_id = p.id AND st.status = 'synced' AND st.version >= p.version)
      ORDER BY p.updated_at LIMIT 1)
    UNION ALL
    (SELECT p.deleted_at FROM product_photo p JOIN photo_sync_status st
         ON st.photo_id = p.id AND st.store_id = %(store)s
      WHERE p.deleted_at IS NOT NULL AND st.status <> 'deleted'
      ORDER BY p.deleted_at LIMIT 1)) changes
"""

_LAST_ERROR = """
SELECT DISTINCT ON (store_id) store_id, photo_id, error, reported_at FROM photo_sync_status
 WHERE error IS NOT NULL AND status = 'failed'
 ORDER BY store_id, reported_at DESC
"""


def fleet(conn, stale_after_hours: float = DEFAULT_STALE_HOURS) -> dict:
    """The fleet view as a dict (the `--json` shape): catalog size, stores, silent ids."""
    with conn.transaction():
        # One snapshot: counts, lags and errors describe the same moment.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        now = conn.execute("SELECT now() AS t").fetchone()["t"]
        catalog = conn.execute("SELECT count(*) AS n FROM product_photo "
                               "WHERE deleted_at IS NULL").fetchone()["n"]
        rows = conn.execute(_STORES).fetchall()
        errors = {row["store_id"]: row for row in conn.execute(_LAST_ERROR).fetchall()}
        stale = dt.timedelta(hours=stale_after_hours)
        stores = []
        for row in rows:
            pending = max(0, catalog - row["synced"] - row["failed"])
            oldest = None
            if pending or row["failed"] or row["deletions_pending"]:
                oldest = conn.execute(_OLDEST_UNSYNCED, {"store": row["id"]}).fetchone()["oldest"]
            last = row["last_report_at"]
            behind = oldest is not None and now - oldest > stale
            silent = bool(row["active"]) and (
                (last is None and catalog > 0) or (last is not None and now - last > stale
                                                   and behind))
            error = errors.get(row["id"])
            stores.append({
                "store_id": str(row["id"]),
                "name": row["name"],
                "active": row["active"],
                "last_report_at": last.isoformat() if last else None,
                "synced": row["synced"],
                "failed": row["failed"],
                "pending": pending,
                "deletions_pending": row["deletions_pending"],
                "lag_seconds": round((now - oldest).total_seconds(), 1) if oldest else 0.0,
                "oldest_unsynced_change_at": oldest.isoformat() if oldest else None,
                "last_error": {"photo_id": str(error["photo_id"]), "error": error["error"],
                               "reported_at": error["reported_at"].isoformat()}
                if error else None,
                "silent": silent,
            })
    return {"generated_at": now.isoformat(), "catalog_photos": catalog,
            "stale_after_hours": stale_after_hours, "stores": stores,
            "silent": [s["store_id"] for s in stores if s["silent"]]}


# CLI ------------------------------------------------------------------------------------

def _hours(value: str) -> float:
    try:
        hours = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of hours") from None
    if not 0 < hours < 24 * 366:
        raise argparse.ArgumentTypeError("--stale-after must be between 0 and a year of hours")
    return hours


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `fleet` on the `photo-sync-ho` subcommands."""
    parser = subparsers.add_parser(
        "fleet", help="per store: last report, synced/failed/pending vs the catalog, lag, "
        "silent stores", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the fleet view as JSON")
    parser.add_argument("--stale-after", type=_hours, default=DEFAULT_STALE_HOURS,
                        metavar="HOURS", help="a store quiet for longer while behind is "
                        f"silent (default {DEFAULT_STALE_HOURS:g})")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """`photo-sync-ho fleet`: print the view; 0 whenever the catalog could be read."""
    settings = HOSettings.load(getattr(args, "config", None), need_jwt=False, need_s3=False)
    with catalog.connect(settings.database_url, setting=SETTING,
                         statement_timeout_ms=settings.statement_timeout_ms,
                         lock_timeout_ms=settings.lock_timeout_ms) as conn:
        try:
            view = fleet(conn, args.stale_after)
        except psycopg.errors.UndefinedTable:
            raise ConfigError("the HO catalog has no photo-sync tables: run "
                              "`photo-sync-ho init-db`") from None
        except psycopg.Error as exc:
            raise db.unavailable(exc, SETTING) from None
    if args.json:
        print(json.dumps(view))
    else:
        print_table(view)
    return 0


def _age(seconds: float | None) -> str:
    if not seconds:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def print_table(view: dict) -> None:
    """One line per store, then the silent ones."""
    print(f"catalog: {view['catalog_photos']} live photos")
    print(f"{'store':36}  {'name':16} {'synced':>7} {'failed':>6} {'pending':>7} "
          f"{'lag':>7}  last report                 last error")
    for s in view["stores"]:
        state = "" if s["active"] else " (disabled)"
        error = (s["last_error"]["error"] or "")[:60] if s["last_error"] else "-"
        print(f"{s['store_id']:36}  {(s['name'] or '-')[:16]:16} {s['synced']:7} "
              f"{s['failed']:6} {s['pending']:7} {_age(s['lag_seconds']):>7}  "
              f"{(s['last_report_at'] or 'never')[:26]:26}  {error}{state}")
    if view["silent"]:
        print(f"silent for over {view['stale_after_hours']:g}h while behind: "
              + ", ".join(view["silent"]))
    else:
        print("no silent stores")
