"""`photo-sync-edge`: the store's sync agent (run by systemd timers, or by hand).

Exit codes: 0 done; 1 done with some photos failed (or deletions refused);
2 bad usage or configuration, or the store database failing (unreachable, or a
lock held elsewhere for longer than PHOTO_SYNC_EDGE_LOCK_TIMEOUT); 3 another
run holds the lock; 4 HO unreachable or refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import psycopg

from photo_sync.edge import schema, verify
from photo_sync.edge.engine import run_sync
from photo_sync.edge.reporter import deliver
from photo_sync.edge.settings import EdgeSettings
from photo_sync.edge.store import EdgeStore
from photo_sync.errors import EXIT_OK, EXIT_PARTIAL, PhotoSyncError


def build_parser() -> argparse.ArgumentParser:
    """The command line of `photo-sync-edge`."""
    parser = argparse.ArgumentParser(prog="photo-sync-edge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="KEY=VALUE settings file (the environment wins)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    sub = parser.add_subparsers(dest="command", required=True)
    sch = sub.add_parser("schema", help="the edge migration")
    sch.add_argument("action", choices=("apply", "check"),
                     help="apply: migrate; check: print what apply would run (exit 1 if any)")
    sch.add_argument("--grant-to", help="DB role the agent runs as (gets its privileges)")
    pull = sub.add_parser("pull", help="one sync run")
    pull.add_argument("--mode", choices=("full", "incremental"), default="incremental")
    pull.add_argument("--dry-run", action="store_true",
                      help="the same run, rolled back at the end: counts what it would "
                      "download, update and delete; writes nothing")
    pull.add_argument("--force-delete", action="store_true",
                      help="delete even above PHOTO_SYNC_EDGE_MAX_DELETE_FRACTION")
    pull.add_argument("--no-report", action="store_true",
                      help="leave status reports queued (deliver later with `report`)")
    pull.add_argument("--list-ids", action="store_true",
                      help="add the ids downloaded, updated and deleted to the summary")
    pull.add_argument("--json", action="store_true", help="print the run summary as JSON")
    rep = sub.add_parser("report", help="deliver pending status reports to HO")
    rep.add_argument("--json", action="store_true")
    st = sub.add_parser("status", help="last runs, counts by sync_status, cursor, lag")
    st.add_argument("--json", action="store_true")
    rst = sub.add_parser("reset", help="what rollback does: every photo back to pending")
    rst.add_argument("--clear-bytes", action="store_true",
                     help="also clear the photo bytes held (the store's apps use HO's URLs)")
    rst.add_argument("--dry-run", action="store_true",
                     help="count what would be reset and cleared; change nothing")
    rst.add_argument("--json", action="store_true",
                     help='print {"reset", "cleared", "changed", "dry_run"} as JSON')
    verify.add_parser(sub)
    srv = sub.add_parser("serve", help="serve the store's photos over HTTP (gunicorn; "
                         "PHOTO_SYNC_EDGE_SERVE_BIND)")
    srv.add_argument("--bind", help="host:port (default PHOTO_SYNC_EDGE_SERVE_BIND or "
                     "127.0.0.1:8081)")
    srv.set_defaults(func=_serve)
    return parser


def _serve(args: argparse.Namespace) -> int:
    # Imported here: Flask is only needed by the photo server, not by every timer run.
    from photo_sync.edge import serve
    return serve.run(args)


def _progress_printer():
    if not sys.stderr.isatty():
        return None

    def show(summary) -> None:
        print(f"\rlisted {summary.listed}  downloaded {summary.downloaded} "
              f"({summary.bytes / 1e6:.1f} MB)  unchanged {summary.unchanged}  "
              f"failed {summary.failed}", end="", file=sys.stderr, flush=True)

    return show


def _print_summary(summary) -> None:
    s = summary
    would = "would be " if s.dry_run else ""
    print(f"{s.mode} sync{' (dry run)' if s.dry_run else ''} {s.status}: listed {s.listed}, "
          f"{'would download' if s.dry_run else 'downloaded'} {s.downloaded} "
          f"({s.bytes / 1e6:.1f} MB), {would}updated {s.updated}, {would}deleted {s.deleted}, "
          f"unchanged {s.unchanged}, failed {s.failed} in {s.duration:.1f}s")
    for failure in s.failures[:10]:
        print(f"  failed {failure['photo_id']}: {failure['error']}")
    if s.error:
        print(f"  {s.error}")
    if not s.dry_run and (s.reported or s.report_pending):
        print(f"  reported {s.reported} statuses to HO, {s.report_pending} still queued")


def run(args: argparse.Namespace) -> int:
    """Carry out one parsed command; returns the exit code (errors propagate to main)."""
    if args.command in ("verify", "serve"):
        return args.func(args)
    if args.command == "schema":
        settings = EdgeSettings.load(args.config, need_ho=False)
        statements = schema.ensure(settings.database_url, settings.table,
                                   grant_to=args.grant_to, check_only=args.action == "check")
        if args.action == "check":
            for statement in statements:
                print(statement.rstrip() + ";")
            print(f"-- {len(statements)} statements would run" if statements
                  else "-- the edge schema is current")
            return EXIT_PARTIAL if statements else EXIT_OK
        print(f"applied {len(statements)} statements" if statements
              else "the edge schema is current")
        return EXIT_OK
    if args.command == "status":
        settings = EdgeSettings.load(args.config, need_ho=False)
        store = EdgeStore.from_settings(settings)
        try:
            store.check_schema()
            status = store.status()
        except psycopg.Error as exc:
            raise store.error(exc) from None
        finally:
            store.close()
        if args.json:
            print(json.dumps(status, default=str))
        else:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(status["counts_by_status"].items()))
            print(f"photos {status['photos']} ({counts or 'none'}), "
                  f"{status['bytes_held'] / 1e6:.1f} MB held")
            print(f"last success {status['last_success_at'] or 'never'}"
                  + (f" ({status['lag_seconds']:.0f}s ago)" if status["lag_seconds"] else ""))
            print(f"pending reports {status['pending_reports']}")
            for r in status["last_runs"][:5]:
                print(f"  run {r['id']}: {r['mode']} {r['status']} {r['started_at']} "
                      f"downloaded {r['downloaded']} failed {r['failed']}"
                      + (f" ({r['error']})" if r["error"] else ""))
        return EXIT_OK
    if args.command == "reset":
        settings = EdgeSettings.load(args.config, need_ho=False)
        store = EdgeStore.from_settings(settings)
        try:
            counts = store.reset(clear_bytes=args.clear_bytes, dry_run=args.dry_run)
        except psycopg.Error as exc:
            raise store.error(exc) from None
        finally:
            store.close()
        changed = bool(counts["reset"] or counts["cleared"])
        if args.json:
            print(json.dumps({"reset": counts["reset"], "cleared": counts["cleared"],
                              "changed": changed, "dry_run": args.dry_run}))
        else:
            reset, clear = ("would reset", "would clear") if args.dry_run else ("reset", "cleared")
            print(f"{reset} {counts['reset']} photos to pending"
                  + (f", {clear} the bytes of {counts['cleared']}" if args.clear_bytes else ""))
        return EXIT_OK
    settings = EdgeSettings.load(args.config)
    if args.command == "report":
        result = deliver(settings)
        if args.json:
            print(json.dumps({"reported": result.reported, "pending": result.pending,
                              "changed": result.changed}))
        else:
            print(f"reported {result.reported} statuses to HO, {result.pending} still queued")
        return EXIT_OK
    progress = _progress_printer()
    try:
        summary = run_sync(settings, args.mode, dry_run=args.dry_run,
                           force_delete=args.force_delete, list_ids=args.list_ids,
                           report=not args.no_report, progress=progress)
    finally:
        if progress:
            print(file=sys.stderr)
    if args.json:
        print(json.dumps(summary.as_dict(), default=str))
    else:
        _print_summary(summary)
    return EXIT_OK if summary.status == "ok" else EXIT_PARTIAL


def main(argv: list[str] | None = None) -> int:
    """The `photo-sync-edge` entry point: exit code of the command, or of its error."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except PhotoSyncError as exc:  # the one place an error becomes words and an exit code
        print(f"photo-sync-edge: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
