"""The HO catalog: product photos with a gap-free change feed, stores, and status reports.

Incremental sync must never skip a change. Offsets skip rows when the table
changes between pages, and timestamps miss rows that commit late with an
earlier time. The feed is keyed on `change_seq` instead, drawn by a trigger
while holding a transaction-scoped advisory lock: writers draw numbers one
transaction at a time and commit before the next one draws, so every reader
sees a prefix of the sequence and a cursor can never jump over a row that
commits later.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

# Any constant works; it only has to be the same for every writer of the catalog.
CHANGE_LOCK_KEY = 0x70686F746F  # "photo"

SCHEMA_VERSION = 1

PHOTO_COLUMNS = ("id, product_id, object_key, filename, size, content_type, checksum, "
                 "checksum_sha256, version, is_primary, sort_order, updated_at, "
                 "deleted_at, change_seq")

DDL = [
    "CREATE TABLE IF NOT EXISTS photo_sync_meta (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE SEQUENCE IF NOT EXISTS product_photo_change_seq",
    """CREATE TABLE IF NOT EXISTS product_photo (
        id uuid PRIMARY KEY,
        product_id uuid NOT NULL,
        object_key varchar(1024) NOT NULL,
        filename varchar(255) NOT NULL,
        size integer NOT NULL,
        content_type varchar(100) NOT NULL,
        checksum varchar(64) NOT NULL,
        version integer NOT NULL DEFAULT 1,
        is_primary boolean NOT NULL DEFAULT false,
        sort_order integer NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now())""",
    # An existing catalog gets only what the sync API needs on top.
    "ALTER TABLE product_photo ADD COLUMN IF NOT EXISTS checksum_sha256 varchar(64)",
    "ALTER TABLE product_photo ADD COLUMN IF NOT EXISTS deleted_at timestamptz",
    "ALTER TABLE product_photo ADD COLUMN IF NOT EXISTS change_seq bigint",
    """UPDATE product_photo SET change_seq = nextval('product_photo_change_seq')
        WHERE change_seq IS NULL""",
    "CREATE UNIQUE INDEX IF NOT EXISTS product_photo_change_seq_idx ON product_photo (change_seq)",
    "CREATE INDEX IF NOT EXISTS product_photo_updated_at_idx ON product_photo (updated_at)",
    "CREATE INDEX IF NOT EXISTS product_photo_object_key_idx ON product_photo (object_key)",
    # One primary photo per product, among the photos that are not deleted.
    """CREATE UNIQUE INDEX IF NOT EXISTS product_photo_one_primary_idx
        ON product_photo (product_id) WHERE is_primary AND deleted_at IS NULL""",
    f"""CREATE OR REPLACE FUNCTION photo_sync_stamp_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock({CHANGE_LOCK_KEY});
            NEW.change_seq := nextval('product_photo_change_seq');
            NEW.updated_at := now();
            RETURN NEW;
        END $$""",
    "DROP TRIGGER IF EXISTS product_photo_stamp_insert ON product_photo",
    """CREATE TRIGGER product_photo_stamp_insert BEFORE INSERT ON product_photo
        FOR EACH ROW EXECUTE FUNCTION photo_sync_stamp_change()""",
    "DROP TRIGGER IF EXISTS product_photo_stamp_update ON product_photo",
    """CREATE TRIGGER product_photo_stamp_update BEFORE UPDATE ON product_photo
        FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW)
        EXECUTE FUNCTION photo_sync_stamp_change()""",
    """CREATE TABLE IF NOT EXISTS sync_store (
        id uuid PRIMARY KEY,
        name text NOT NULL DEFAULT '',
        active boolean NOT NULL DEFAULT true,
        secret_hash text NOT NULL,
        token_generation integer NOT NULL DEFAULT 1,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS photo_sync_status (
        store_id uuid NOT NULL REFERENCES sync_store (id) ON DELETE CASCADE,
        photo_id uuid NOT NULL,
        version integer NOT NULL,
        status varchar(20) NOT NULL,
        synced_at timestamptz,
        error text,
        reported_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (store_id, photo_id))""",
    """CREATE INDEX IF NOT EXISTS photo_sync_status_status_idx
        ON photo_sync_status (store_id, status)""",
]


def connect(database_url: str, **kwargs) -> psycopg.Connection:
    """A catalog connection with dict rows."""
    return psycopg.connect(database_url, row_factory=dict_row, connect_timeout=10, **kwargs)


def init_db(conn: psycopg.Connection) -> None:
    """Create or upgrade the HO tables; safe to run any number of times."""
    with conn.transaction():
        # Two init-db runs at once (two HO hosts rolling out) must not race.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHANGE_LOCK_KEY + 1,))
        for statement in DDL:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO photo_sync_meta (key, value) VALUES ('schema_version', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (str(SCHEMA_VERSION),))


# Photos ---------------------------------------------------------------------------------

@dataclass
class Page:
    photos: list[dict]
    total: int
    has_more: bool
    next_offset: int | None
    next_seq: int


def list_changes(conn: psycopg.Connection, *, limit: int, after_seq: int | None = None,
                 offset: int = 0, since: dt.datetime | None = None) -> Page:
    """One page of photos in change order.

    With `after_seq` (a cursor) the page is the change feed after that point,
    tombstones included. Without it, the legacy offset listing: live photos,
    or with `since` every photo changed at or after that time, tombstones
    included. `next_seq` is where a cursor continues the feed after this page.
    """
    with conn.transaction(), conn.cursor() as cur:
        # One snapshot for the page, its total and the high-water mark.
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if after_seq is not None:
            cur.execute(f"SELECT {PHOTO_COLUMNS} FROM product_photo WHERE change_seq > %s "
                        "ORDER BY change_seq LIMIT %s", (after_seq, limit + 1))
            rows = cur.fetchall()
            cur.execute("SELECT count(*) AS n FROM product_photo WHERE change_seq > %s",
                        (after_seq,))
            total = cur.fetchone()["n"]
            has_more = len(rows) > limit
            rows = rows[:limit]
            next_seq = rows[-1]["change_seq"] if rows else after_seq
            return Page(rows, total, has_more, None, next_seq)

        if since is None:
            where, params = "deleted_at IS NULL", ()
        else:
            where, params = "updated_at >= %s", (since,)
        cur.execute(f"SELECT {PHOTO_COLUMNS} FROM product_photo WHERE {where} "
                    "ORDER BY change_seq OFFSET %s LIMIT %s", (*params, offset, limit + 1))
        rows = cur.fetchall()
        cur.execute(f"SELECT count(*) AS n FROM product_photo WHERE {where}", params)
        total = cur.fetchone()["n"]
        has_more = len(rows) > limit
        rows = rows[:limit]
        if rows:
            next_seq = rows[-1]["change_seq"]
        else:
            cur.execute("SELECT coalesce(max(change_seq), 0) AS n FROM product_photo")
            next_seq = cur.fetchone()["n"]
        return Page(rows, total, has_more, offset + len(rows) if has_more else None, next_seq)


def get_photo(conn: psycopg.Connection, photo_id: uuid.UUID) -> dict | None:
    """The catalog row of one photo, tombstones included, or None."""
    return conn.execute(f"SELECT {PHOTO_COLUMNS} FROM product_photo WHERE id = %s",
                        (photo_id,)).fetchone()


def find_photo(conn: psycopg.Connection, product_id: uuid.UUID, filename: str) -> dict | None:
    """The live photo of a product with this filename, or None."""
    return conn.execute(
        f"SELECT {PHOTO_COLUMNS} FROM product_photo WHERE product_id = %s AND filename = %s "
        "AND deleted_at IS NULL", (product_id, filename)).fetchone()


def product_has_primary(conn: psycopg.Connection, product_id: uuid.UUID) -> bool:
    return conn.execute("SELECT 1 FROM product_photo WHERE product_id = %s AND is_primary "
                        "AND deleted_at IS NULL", (product_id,)).fetchone() is not None


def clear_primary(conn: psycopg.Connection, product_id: uuid.UUID) -> None:
    """The product's live primary photo, if any, stops being primary."""
    conn.execute("UPDATE product_photo SET is_primary = false WHERE product_id = %s "
                 "AND is_primary AND deleted_at IS NULL", (product_id,))


def insert_photo(conn: psycopg.Connection, photo: dict) -> None:
    conn.execute(
        "INSERT INTO product_photo (id, product_id, object_key, filename, size, content_type, "
        "checksum, checksum_sha256, version, is_primary, sort_order) VALUES (%(id)s, "
        "%(product_id)s, %(object_key)s, %(filename)s, %(size)s, %(content_type)s, "
        "%(checksum)s, %(checksum_sha256)s, %(version)s, %(is_primary)s, %(sort_order)s)", photo)


def update_photo_bytes(conn: psycopg.Connection, photo_id: uuid.UUID, *, object_key: str,
                       size: int, content_type: str, checksum: str, checksum_sha256: str) -> int:
    """Point a photo at new bytes; bumps its version. Returns the new version."""
    row = conn.execute(
        "UPDATE product_photo SET object_key = %s, size = %s, content_type = %s, checksum = %s, "
        "checksum_sha256 = %s, version = version + 1 WHERE id = %s RETURNING version",
        (object_key, size, content_type, checksum, checksum_sha256, photo_id)).fetchone()
    return row["version"]


def mark_deleted(conn: psycopg.Connection, photo_id: uuid.UUID) -> dict | None:
    """Tombstone a photo (stores delete it on their next sync). Returns the row, or None."""
    return conn.execute(
        f"UPDATE product_photo SET deleted_at = now(), is_primary = false "
        f"WHERE id = %s AND deleted_at IS NULL RETURNING {PHOTO_COLUMNS}",
        (photo_id,)).fetchone()


# Stores ---------------------------------------------------------------------------------

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        candidate = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), dklen=32,
                                   n=int(n), r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(candidate.hex(), digest)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def get_store(conn: psycopg.Connection, store_id: uuid.UUID) -> dict | None:
    return conn.execute("SELECT id, name, active, secret_hash, token_generation FROM sync_store "
                        "WHERE id = %s", (store_id,)).fetchone()


def list_stores(conn: psycopg.Connection) -> list[dict]:
    return conn.execute(
        "SELECT s.id, s.name, s.active, s.created_at, s.updated_at, "
        "count(st.photo_id) FILTER (WHERE st.status = 'synced') AS synced, "
        "count(st.photo_id) FILTER (WHERE st.status = 'failed') AS failed, "
        "max(st.reported_at) AS last_report_at "
        "FROM sync_store s LEFT JOIN photo_sync_status st ON st.store_id = s.id "
        "GROUP BY s.id ORDER BY s.name, s.id").fetchall()


def set_store(conn: psycopg.Connection, store_id: uuid.UUID, name: str, secret: str) -> str:
    """Make the store exist, active, with this name and secret.

    Returns 'created', 'updated' or 'unchanged' (for Ansible's changed_when)."""
    row = get_store(conn, store_id)
    if row is None:
        conn.execute("INSERT INTO sync_store (id, name, secret_hash) VALUES (%s, %s, %s)",
                     (store_id, name, hash_secret(secret)))
        return "created"
    secret_ok = verify_secret(secret, row["secret_hash"])
    if secret_ok and row["name"] == name and row["active"]:
        return "unchanged"
    conn.execute(
        "UPDATE sync_store SET name = %s, active = true, updated_at = now(), "
        "secret_hash = CASE WHEN %s THEN secret_hash ELSE %s END, "
        "token_generation = token_generation + CASE WHEN %s THEN 0 ELSE 1 END WHERE id = %s",
        (name, secret_ok, hash_secret(secret), secret_ok, store_id))
    return "updated"


def add_store(conn: psycopg.Connection, store_id: uuid.UUID, name: str) -> str:
    """Register a new store; returns its generated secret (shown once, stored hashed)."""
    secret = new_secret()
    try:
        conn.execute("INSERT INTO sync_store (id, name, secret_hash) VALUES (%s, %s, %s)",
                     (store_id, name, hash_secret(secret)))
    except psycopg.errors.UniqueViolation:
        raise LookupError(f"store {store_id} already exists: use `store rotate-secret` "
                          "for a new secret") from None
    return secret


def disable_store(conn: psycopg.Connection, store_id: uuid.UUID) -> bool:
    """Disable a store; its tokens stop working at once. False when it is unknown."""
    cur = conn.execute("UPDATE sync_store SET active = false, updated_at = now(), "
                       "token_generation = token_generation + 1 WHERE id = %s", (store_id,))
    return cur.rowcount == 1


def rotate_secret(conn: psycopg.Connection, store_id: uuid.UUID) -> str | None:
    """A new secret for a store (old tokens stop working), or None when it is unknown."""
    secret = new_secret()
    cur = conn.execute("UPDATE sync_store SET secret_hash = %s, updated_at = now(), "
                       "token_generation = token_generation + 1 WHERE id = %s",
                       (hash_secret(secret), store_id))
    return secret if cur.rowcount == 1 else None


# Status reports -------------------------------------------------------------------------

def record_statuses(conn: psycopg.Connection, store_id: uuid.UUID, batch: list[dict]) -> int:
    """Upsert a store's per-photo statuses; an older version never overwrites a newer one."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO photo_sync_status AS s (store_id, photo_id, version, status, synced_at, "
            "error) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (store_id, photo_id) DO UPDATE "
            "SET version = EXCLUDED.version, status = EXCLUDED.status, "
            "synced_at = EXCLUDED.synced_at, error = EXCLUDED.error, reported_at = now() "
            "WHERE s.version <= EXCLUDED.version",
            [(store_id, item["photo_id"], item["version"], item["status"], item["synced_at"],
              item["error"]) for item in batch])
    return len(batch)


def store_statuses(conn: psycopg.Connection, store_id: uuid.UUID) -> dict[str, dict]:
    rows = conn.execute("SELECT photo_id, version, status, synced_at, error FROM "
                        "photo_sync_status WHERE store_id = %s", (store_id,)).fetchall()
    return {str(r["photo_id"]): r for r in rows}
