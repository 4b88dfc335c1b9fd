"""`photo-sync-ho`: set up the HO catalog, import photos, manage stores."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

import psycopg

from photo_sync.config import ConfigError
from photo_sync.ho import catalog
from photo_sync.ho.importer import import_directory, read_product_map
from photo_sync.ho.settings import HOSettings
from photo_sync.ho.storage import Storage, StorageUnavailable


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a UUID") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="photo-sync-ho", description=__doc__)
    parser.add_argument("--config", help="KEY=VALUE settings file (the environment wins)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init-db", help="create or upgrade the HO tables and the bucket (idempotent)")
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
                                "read from stdin; prints created, updated or unchanged")
    set_.add_argument("store_id", type=_uuid)
    set_.add_argument("--name", default="")
    set_.add_argument("--secret-stdin", action="store_true", required=True)
    for name, text in (("disable", "disable a store; its tokens stop working at once"),
                       ("rotate-secret", "give a store a new secret; prints it once")):
        cmd = store_sub.add_parser(name, help=text)
        cmd.add_argument("store_id", type=_uuid)
    lst = store_sub.add_parser("list", help="stores and what they reported")
    lst.add_argument("--json", action="store_true")
    return parser


def _connect(settings: HOSettings) -> psycopg.Connection:
    try:
        return catalog.connect(settings.database_url, autocommit=True)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot connect to the HO catalog ({first}): check "
                          "PHOTO_SYNC_HO_DATABASE_URL") from None


def run(args: argparse.Namespace) -> int:
    needs_s3 = args.command in ("init-db", "import")
    settings = HOSettings.load(args.config, need_jwt=False) if needs_s3 else None
    if settings is None:
        from photo_sync.config import Settings
        s = Settings("PHOTO_SYNC_HO_", args.config)
        database_url = s.require("DATABASE_URL", "the HO catalog, a libpq URL")
        settings = HOSettings(database_url=database_url, s3_endpoint="", s3_access_key="")
    with _connect(settings) as conn:
        if args.command == "init-db":
            catalog.init_db(conn)
            created = Storage.from_settings(settings).ensure_bucket()
            print("catalog schema is current"
                  + (f"; created bucket {settings.s3_bucket}" if created else ""))
            return 0
        if args.command == "import":
            if not args.directory.is_dir():
                raise ConfigError(f"{args.directory} is not a directory")
            product_map = read_product_map(args.product_map) if args.product_map else None
            tty = sys.stderr.isatty()

            def progress(done: int, total: int) -> None:
                if tty:
                    print(f"\rimported {done}/{total}", end="", file=sys.stderr, flush=True)

            summary = import_directory(conn, Storage.from_settings(settings), args.directory,
                                       product_map, progress=progress)
            if tty:
                print(file=sys.stderr)
            if args.json:
                print(json.dumps({**summary.as_dict(), "photos": summary.photos}))
            else:
                print(f"created {summary.created}, updated {summary.updated}, "
                      f"unchanged {summary.unchanged}, {summary.bytes} bytes uploaded")
            return 0
        if args.command == "delete":
            with conn.transaction():
                row = catalog.mark_deleted(conn, args.photo_id)
            if row is None:
                print(f"photo {args.photo_id} does not exist or is already deleted",
                      file=sys.stderr)
                return 1
            print(f"deleted photo {args.photo_id}; stores remove it on their next sync")
            return 0
        return _store_command(conn, args)


def _store_command(conn: psycopg.Connection, args: argparse.Namespace) -> int:
    command = args.store_command
    if command == "add":
        try:
            secret = catalog.add_store(conn, args.store_id, args.name)
        except LookupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"store {args.store_id} registered; its secret (shown once, keep it in your "
              f"vault):\n{secret}")
        return 0
    if command == "set":
        secret = sys.stdin.readline().strip()
        if len(secret) < 16:
            raise ConfigError("the store secret on stdin must be at least 16 characters")
        with conn.transaction():
            result = catalog.set_store(conn, args.store_id, args.name, secret)
        print(f"{result} store {args.store_id}")
        return 0
    if command == "disable":
        with conn.transaction():
            found = catalog.disable_store(conn, args.store_id)
        print(f"store {args.store_id} disabled" if found else f"no store {args.store_id}",
              file=sys.stdout if found else sys.stderr)
        return 0 if found else 1
    if command == "rotate-secret":
        with conn.transaction():
            secret = catalog.rotate_secret(conn, args.store_id)
        if secret is None:
            print(f"no store {args.store_id}", file=sys.stderr)
            return 1
        print(f"new secret for store {args.store_id} (shown once; its old tokens no longer "
              f"work):\n{secret}")
        return 0
    rows = catalog.list_stores(conn)
    if args.json:
        print(json.dumps(rows, default=str))
    else:
        for row in rows:
            state = "active" if row["active"] else "disabled"
            print(f"{row['id']}  {row['name'] or '-':20}  {state:8}  synced={row['synced']} "
                  f"failed={row['failed']}  last_report={row['last_report_at'] or '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ConfigError as exc:
        print(f"photo-sync-ho: {exc}", file=sys.stderr)
        return 2
    except (StorageUnavailable, ValueError) as exc:
        print(f"photo-sync-ho: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
