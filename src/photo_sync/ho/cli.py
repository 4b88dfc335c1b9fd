"""`photo-sync-ho`: set up the HO catalog, import photos, manage stores.

Every command a role or playbook reads answers `--json`, and the role judges
`changed` from that JSON, never from words in the output. Failures are
`PhotoSyncError`s, caught in `main()` only: the message goes to stderr and the
exit code comes from the exception. Only `init-db` and `import` need the S3
settings; the catalog-only commands run with PHOTO_SYNC_HO_DATABASE_URL alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

import psycopg

from photo_sync import db
from photo_sync.errors import ConfigError, PhotoSyncError
from photo_sync.ho import catalog, fleet, stores
from photo_sync.ho.importer import import_directory, read_product_map
from photo_sync.ho.settings import PREFIX, HOSettings
from photo_sync.ho.storage import Storage

DATABASE_SETTING = PREFIX + "DATABASE_URL"
S3_COMMANDS = ("init-db", "import")


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a UUID") from None


def build_parser() -> argparse.ArgumentParser:
    """The command line of `photo-sync-ho`."""
    parser = argparse.ArgumentParser(prog="photo-sync-ho", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="KEY=VALUE settings file (the environment wins)")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init-db",
                          help="create or upgrade the HO tables and the bucket (idempotent)")
    init.add_argument("--json", action="store_true",
                      help='print {"changed", "statements", "bucket_created"}')
    imp = sub.add_parser("import", help="upload images below DIR to S3 and the catalog")
    imp.add_argument("directory", type=Path)
    imp.add_argument("--product-map", type=Path,
                     help="CSV: filename,product_id[,is_primary,sort_order]")
    imp.add_argument("--json", action="store_true", help="print the summary as JSON")
    delete = sub.add_parser("delete", help="delete a photo (stores delete it on their next sync)")
    delete.add_argument("photo_id", type=_uuid)
    store = sub.add_parser("store", help="register and manage stores")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    add = store_sub.add_parser("add", help="register a store; prints its secret once")
    add.add_argument("store_id", type=_uuid)
    add.add_argument("--name", default="")
    set_ = store_sub.add_parser("set", help="make a store exist with this name and the secret "
                                "read from stdin; prints created, updated or unchanged; never "
                                "enables a disabled store (that is `store enable`)")
    set_.add_argument("store_id", type=_uuid)
    set_.add_argument("--name", default="")
    set_.add_argument("--secret-stdin", action="store_true", required=True)
    set_.add_argument("--json", action="store_true",
                      help='print {"store_id", "result", "changed", "enabled"}')
    many = store_sub.add_parser(
        "set-many", help="`store set` for many stores in one transaction: a JSON list of "
        '{"store_id", "name", "secret"[, "state"]} on stdin; state registered (the default: '
        "never enables a disabled store), enabled or disabled (what the photo_sync_store "
        "module does for a rollout)")
    many.add_argument("--json", action="store_true",
                      help='print {"changed", "created", "updated", "enabled", "disabled_now", '
                           '"unchanged", "disabled" (stores left disabled), "dry_run"}')
    many.add_argument("--dry-run", action="store_true",
                      help="say what would be created and updated, and write nothing (Ansible's "
                           "check mode)")
    for name, text in (("enable", "let a disabled store get tokens again"),
                       ("disable", "disable a store; its tokens stop working at once")):
        cmd = store_sub.add_parser(name, help=text)
        cmd.add_argument("store_id", type=_uuid)
        cmd.add_argument("--json", action="store_true",
                         help='print {"store_id", "changed", "enabled"}')
    rotate = store_sub.add_parser("rotate-secret", help="give a store a new secret; prints it once")
    rotate.add_argument("store_id", type=_uuid)
    lst = store_sub.add_parser("list", help="stores and what they reported")
    lst.add_argument("--json", action="store_true")
    fleet.add_parser(sub)
    return parser


def _connect(settings: HOSettings) -> psycopg.Connection:
    return catalog.connect(settings.database_url, setting=DATABASE_SETTING, autocommit=True,
                           statement_timeout_ms=settings.statement_timeout_ms,
                           lock_timeout_ms=settings.lock_timeout_ms)


def _print_json(value: dict) -> None:
    print(json.dumps(value, default=str))


def run(args: argparse.Namespace) -> int:
    """Run one parsed command; returns the exit code, raises `PhotoSyncError` on failure."""
    if args.command == "fleet":
        return args.func(args)
    settings = HOSettings.load(args.config, need_jwt=False,
                               need_s3=args.command in S3_COMMANDS)
    with _connect(settings) as conn:
        try:
            if args.command == "init-db":
                return _init_db(conn, settings, args)
            if args.command == "import":
                return _import(conn, settings, args)
            if args.command == "delete":
                return _delete(conn, args)
            return _store_command(conn, args)
        except psycopg.Error as exc:  # a lock or statement timeout, a lost connection
            raise db.unavailable(exc, DATABASE_SETTING) from None


def _init_db(conn: psycopg.Connection, settings: HOSettings, args) -> int:
    statements = catalog.init_db(conn)
    bucket_created = Storage.from_settings(settings).ensure_bucket()
    if args.json:
        _print_json({"changed": bool(statements or bucket_created), "statements": statements,
                     "bucket_created": bucket_created})
        return 0
    print("catalog schema is current"
          + (f"; applied {statements} changes" if statements else "")
          + (f"; created bucket {settings.s3_bucket}" if bucket_created else ""))
    return 0


def _import(conn: psycopg.Connection, settings: HOSettings, args) -> int:
    if not args.directory.is_dir():
        raise ConfigError(f"{args.directory} is not a directory: give the folder of images "
                          "to import")
    product_map = read_product_map(args.product_map) if args.product_map else None
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if tty:
            print(f"\rimported {done}/{total}", end="", file=sys.stderr, flush=True)

    summary = import_directory(conn, Storage.from_settings(settings), args.directory,
                               product_map, progress=progress,
                               max_bytes=settings.max_photo_bytes)
    if tty:
        print(file=sys.stderr)
    if args.json:
        _print_json({**summary.as_dict(), "photos": summary.photos})
        return 0
    print(f"created {summary.created}, updated {summary.updated}, "
          f"unchanged {summary.unchanged}, {summary.bytes} bytes uploaded"
          + (f", skipped {len(summary.skipped)}" if summary.skipped else ""))
    for skipped in summary.skipped:
        print(f"skipped {skipped['path']}: {skipped['reason']}")
    return 0


def _delete(conn: psycopg.Connection, args) -> int:
    with conn.transaction():
        row = catalog.mark_deleted(conn, args.photo_id)
    if row is None:
        raise PhotoSyncError(f"photo {args.photo_id} does not exist or is already deleted: "
                             "nothing to do")
    print(f"deleted photo {args.photo_id}; stores remove it on their next sync")
    return 0


def _unknown_store(store_id) -> PhotoSyncError:
    return PhotoSyncError(f"no store {store_id}: check the id with `photo-sync-ho store list`")


def _store_command(conn: psycopg.Connection, args: argparse.Namespace) -> int:
    command = args.store_command
    if command == "add":
        try:
            secret = catalog.add_store(conn, args.store_id, args.name)
        except LookupError as exc:
            raise PhotoSyncError(str(exc)) from None
        print(f"store {args.store_id} registered; its secret (shown once, keep it in your "
              f"vault):\n{secret}")
        return 0
    if command == "set":
        secret = sys.stdin.readline().strip()
        if not _secret_ok(secret):
            raise ConfigError("the store secret on stdin must be at least "
                              f"{stores.MIN_SECRET_CHARS} characters")
        with conn.transaction():
            result, enabled = catalog.set_store(conn, args.store_id, args.name, secret)
        if args.json:
            _print_json({"store_id": str(args.store_id), "result": result,
                         "changed": result != "unchanged", "enabled": enabled})
        else:
            print(f"{result} store {args.store_id}"
                  + ("" if enabled else " (disabled: `photo-sync-ho store enable` enables it)"))
        return 0
    if command == "set-many":
        return _set_many(conn, args)
    if command in ("enable", "disable"):
        change = catalog.enable_store if command == "enable" else catalog.disable_store
        with conn.transaction():
            changed = change(conn, args.store_id)
        if changed is None:
            raise _unknown_store(args.store_id)
        if args.json:
            _print_json({"store_id": str(args.store_id), "changed": changed,
                         "enabled": command == "enable"})
        else:
            print(f"store {args.store_id} {command}d" + ("" if changed else " already"))
        return 0
    if command == "rotate-secret":
        with conn.transaction():
            secret = catalog.rotate_secret(conn, args.store_id)
        if secret is None:
            raise _unknown_store(args.store_id)
        print(f"new secret for store {args.store_id} (shown once; its old tokens no longer "
              f"work):\n{secret}")
        return 0
    rows = catalog.list_stores(conn)
    if args.json:
        _print_json(rows)
    else:
        for row in rows:
            state = "active" if row["active"] else "disabled"
            print(f"{row['id']}  {row['name'] or '-':20}  {state:8}  synced={row['synced']} "
                  f"failed={row['failed']}  last_report={row['last_report_at'] or '-'}")
    return 0


def _secret_ok(secret: str) -> bool:
    """Whether a store secret given to `store set` is long enough."""
    return stores.secret_ok(secret)


def _read_store_list(text: str) -> list[stores.Entry]:
    """The stores of `store set-many`'s stdin, checked whole before anything is written.
    Errors name the entry and the store, never a secret."""
    try:
        entries = json.loads(text)
    except ValueError:
        raise ConfigError("store set-many: stdin is not JSON: give a list of "
                          '{"store_id", "name", "secret"}') from None
    if not isinstance(entries, list):
        raise ConfigError('store set-many: stdin must be a JSON list of {"store_id", "name", '
                          '"secret"}')
    return stores.parse_entries(entries, where="store set-many")


def _set_many(conn: psycopg.Connection, args: argparse.Namespace) -> int:
    # One transaction: a list that fails half-way registers none of it; a dry run is the
    # same work, rolled back.
    outcome = stores.apply(conn, _read_store_list(sys.stdin.read()), dry_run=args.dry_run)
    if args.json:
        _print_json({"changed": outcome["changed"], "created": outcome["created"],
                     "updated": outcome["updated"], "enabled": outcome["enabled"],
                     "disabled_now": outcome["disabled"], "unchanged": outcome["unchanged"],
                     "disabled": outcome["inactive"], "dry_run": args.dry_run})
    else:
        print(("dry run, nothing written; " if args.dry_run else "")
              + f"stores: {len(outcome['created'])} created, {len(outcome['updated'])} updated, "
              f"{outcome['unchanged']} unchanged"
              + "".join(f", {len(outcome[state])} {state}" for state in ("enabled", "disabled")
                        if outcome[state])
              + (f"; disabled (`photo-sync-ho store enable` enables them): "
                 f"{', '.join(outcome['inactive'])}" if outcome["inactive"] else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `photo-sync-ho`: the one place a failure becomes words and an exit code."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except PhotoSyncError as exc:
        print(f"photo-sync-ho: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
