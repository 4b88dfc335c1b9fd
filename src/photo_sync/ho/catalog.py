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
from psycopg import sql
from psycopg.rows import dict_row

from photo_sync import db, protocol

# Any constant works; it only has to be the same for every writer of the catalog.
CHANGE_LOCK_KEY = 0x70686F746F  # "photo"

SCHEMA_VERSION = 1

# The photo columns, from protocol.PHOTO_FIELDS (the field table), and the feed's sequence.
PHOTO_COLUMN_NAMES = tuple(field.column for field in protocol.ho_fields()) + ("change_seq",)
PHOTO_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, PHOTO_COLUMN_NAMES))

DDL = [
    "CREATE TABLE IF NOT EXISTS photo_sync_meta (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE SEQUENCE IF NOT EXISTS product_photo_change_seq",
    # The original design's columns, then what the sync API added to an existing catalog.
    "CREATE TABLE IF NOT EXISTS product_photo (\n        " + ",\n        ".join(
        f"{field.column} {field.ho}" for field in protocol.ho_fields() if not field.ho_added)
    + ")",
    *(f"ALTER TABLE product_photo ADD COLUMN IF NOT EXISTS {field.column} {field.ho}"
      for field in protocol.ho_fields() if field.ho_added),
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
    # A pair is one step: replacing a trigger with the same definition changes nothing.
    ("DROP TRIGGER IF EXISTS product_photo_stamp_insert ON product_photo",
     """CREATE TRIGGER product_photo_stamp_insert BEFORE INSERT ON product_photo
        FOR EACH ROW EXECUTE FUNCTION photo_sync_stamp_change()"""),
    ("DROP TRIGGER IF EXISTS product_photo_stamp_update ON product_photo",
     """CREATE TRIGGER product_photo_stamp_update BEFORE UPDATE ON product_photo
        FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW)
        EXECUTE FUNCTION photo_sync_stamp_change()"""),
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
    # Failed token requests, per (store id, client address) and per client address (see
    # record_auth_failure; never per store id alone: ids are not secrets):
    # in the catalog so the limit holds across gunicorn workers and API hosts.
    """CREATE TABLE IF NOT EXISTS auth_failure (
        key text NOT NULL,
        failed_at timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX IF NOT EXISTS auth_failure_key_idx ON auth_failure (key, failed_at)",
    "CREATE INDEX IF NOT EXISTS auth_failure_failed_at_idx ON auth_failure (failed_at)",
]

# What init-db compares before and after each step to tell whether it changed anything:
# the tables, columns, indexes, constraints, triggers, functions and sequences of the schema.
_SCHEMA_FINGERPRINT = """
SELECT md5(coalesce(string_agg(item, E'\n' ORDER BY item), '')) AS fingerprint FROM (
    SELECT 'c ' || table_name || '.' || column_name || ' ' || data_type || ' '
           || coalesce(character_maximum_length::text, '') || ' '
           || coalesce(column_default, '') || ' ' || is_nullable AS item
      FROM information_schema.columns WHERE table_schema = current_schema()
    UNION ALL
    SELECT 'i ' || indexdef FROM pg_indexes WHERE schemaname = current_schema()
    UNION ALL
    SELECT 'k ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
      FROM pg_constraint WHERE connamespace = current_schema()::regnamespace
    UNION ALL
    SELECT 't ' || pg_get_triggerdef(t.oid) FROM pg_trigger t
      JOIN pg_class c ON c.oid = t.tgrelid
     WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT 'f ' || proname || ' ' || md5(prosrc) FROM pg_proc
     WHERE pronamespace = current_schema()::regnamespace
    UNION ALL
    SELECT 's ' || sequence_name FROM information_schema.sequences
     WHERE sequence_schema = current_schema()
) AS schema_items"""


def connect(database_url: str, *, setting: str = "PHOTO_SYNC_HO_DATABASE_URL",
            statement_timeout_ms: int = db.STATEMENT_TIMEOUT_MS,
            lock_timeout_ms: int = db.LOCK_TIMEOUT_MS, **kwargs) -> psycopg.Connection:
    """A catalog connection with dict rows and the session timeouts of `photo_sync.db`."""
    return db.connect(database_url, setting=setting, statement_timeout_ms=statement_timeout_ms,
                      lock_timeout_ms=lock_timeout_ms, row_factory=dict_row, **kwargs)


def _fingerprint(conn: psycopg.Connection) -> str:
    row = conn.execute(_SCHEMA_FINGERPRINT).fetchone()
    return row["fingerprint"] if isinstance(row, dict) else row[0]


def init_db(conn: psycopg.Connection) -> int:
    """Create or upgrade the HO tables; safe to run any number of times.

    Returns how many steps changed the catalog (0 when it was already current), which
    is what `init-db --json` reports as `statements` and judges `changed` by."""
    applied = 0
    with conn.transaction():
        # Two init-db runs at once (two HO hosts rolling out) must not race.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHANGE_LOCK_KEY + 1,))
        before = _fingerprint(conn)
        for step in DDL:
            rows = 0
            for statement in (step if isinstance(step, tuple) else (step,)):
                cur = conn.execute(statement)
                if statement.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE")):
                    rows += max(cur.rowcount, 0)
            after = _fingerprint(conn)
            if rows or after != before:
                applied += 1
            before = after
        cur = conn.execute(
            "INSERT INTO photo_sync_meta (key, value) VALUES ('schema_version', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value "
            "WHERE photo_sync_meta.value IS DISTINCT FROM EXCLUDED.value",
            (str(SCHEMA_VERSION),))
        applied += max(cur.rowcount, 0)
    return applied


# Photos ---------------------------------------------------------------------------------

@dataclass
class Page:
    """One page of the photo listing or change feed, and where the next page starts."""

    photos: list[dict]
    total: int
    has_more: bool
    next_offset: int | None
    next_seq: int
    # The newest change in the catalog, and which catalog this is (see FEED_EPOCH_SQL):
    # a store whose cursor is beyond `head`, or that last read another epoch, reads a
    # catalog whose history went back (a restore) and must walk it whole.
    head: int | None = None
    epoch: str | None = None


# What a restore changes although the data comes back: the cluster (system identifier),
# the database (its OID, new when a dump is restored into a new database) and the
# timeline (new after a point-in-time recovery). A restore in place from a dump keeps all
# three; its sequence goes back, which the stores see as a cursor beyond `head`.
FEED_EPOCH_SQL = (
    "SELECT (SELECT system_identifier FROM pg_control_system())::text || '-' || "
    "(SELECT oid FROM pg_database WHERE datname = current_database())::text || '-' || "
    "(SELECT timeline_id FROM pg_control_checkpoint())::text AS epoch, "
    "(SELECT coalesce(max(change_seq), 0) FROM product_photo) AS head")


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
        cur.execute(FEED_EPOCH_SQL)
        mark = cur.fetchone()
        if after_seq is not None:
            cur.execute(sql.SQL("SELECT {} FROM product_photo WHERE change_seq > %s "
                                "ORDER BY change_seq LIMIT %s").format(PHOTO_COLUMNS),
                        (after_seq, limit + 1))
            rows = cur.fetchall()
            cur.execute("SELECT count(*) AS n FROM product_photo WHERE change_seq > %s",
                        (after_seq,))
            total = cur.fetchone()["n"]
            has_more = len(rows) > limit
            rows = rows[:limit]
            next_seq = rows[-1]["change_seq"] if rows else after_seq
            return Page(rows, total, has_more, None, next_seq, mark["head"], mark["epoch"])

        if since is None:
            where, params = "deleted_at IS NULL", ()
        else:
            where, params = "updated_at >= %s", (since,)
        cur.execute(sql.SQL("SELECT {} FROM product_photo WHERE {} ORDER BY change_seq "
                            "OFFSET %s LIMIT %s").format(PHOTO_COLUMNS, sql.SQL(where)),
                    (*params, offset, limit + 1))
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
        return Page(rows, total, has_more, offset + len(rows) if has_more else None, next_seq,
                    mark["head"], mark["epoch"])


def get_photo(conn: psycopg.Connection, photo_id: uuid.UUID) -> dict | None:
    """The catalog row of one photo, tombstones included, or None."""
    return conn.execute(sql.SQL("SELECT {} FROM product_photo WHERE id = %s").format(
        PHOTO_COLUMNS), (photo_id,)).fetchone()


_STORE_AND_PHOTO = sql.SQL(
    "SELECT s.active AS store_active, s.token_generation AS store_token_generation, {} "
    "FROM sync_store s LEFT JOIN product_photo p ON p.id = %s WHERE s.id = %s").format(
    sql.SQL(", ").join(sql.Identifier("p", name) for name in PHOTO_COLUMN_NAMES))


def get_store_and_photo(conn: psycopg.Connection, store_id: uuid.UUID,
                        photo_id: uuid.UUID | None) -> tuple[dict | None, dict | None]:
    """(store, photo) in one statement, for the download view's one catalog round trip.

    store is {"active", "token_generation"} or None when unknown; photo is get_photo's row
    (tombstones included) or None. `photo_id` None looks up the store alone."""
    row = conn.execute(_STORE_AND_PHOTO, (photo_id, store_id)).fetchone()
    if row is None:
        return None, None
    store = {"active": row.pop("store_active"),
             "token_generation": row.pop("store_token_generation")}
    return store, (row if row["id"] is not None else None)


def find_photo(conn: psycopg.Connection, product_id: uuid.UUID, filename: str) -> dict | None:
    """The live photo of a product with this filename, or None."""
    return conn.execute(
        sql.SQL("SELECT {} FROM product_photo WHERE product_id = %s AND filename = %s "
                "AND deleted_at IS NULL").format(PHOTO_COLUMNS),
        (product_id, filename)).fetchone()


def product_has_primary(conn: psycopg.Connection, product_id: uuid.UUID) -> bool:
    """Whether the product has a live primary photo."""
    return conn.execute("SELECT 1 FROM product_photo WHERE product_id = %s AND is_primary "
                        "AND deleted_at IS NULL", (product_id,)).fetchone() is not None


def clear_primary(conn: psycopg.Connection, product_id: uuid.UUID) -> None:
    """The product's live primary photo, if any, stops being primary."""
    conn.execute("UPDATE product_photo SET is_primary = false WHERE product_id = %s "
                 "AND is_primary AND deleted_at IS NULL", (product_id,))


def insert_photo(conn: psycopg.Connection, photo: dict) -> None:
    """Add a new photo row (the trigger stamps its change sequence and time): the catalog
    columns of the fields in `photo`; the rest take their column defaults."""
    names = [field.column for field in protocol.ho_fields() if field.column in photo]
    conn.execute(sql.SQL("INSERT INTO product_photo ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(map(sql.Placeholder, names))), photo)


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
        sql.SQL("UPDATE product_photo SET deleted_at = now(), is_primary = false "
                "WHERE id = %s AND deleted_at IS NULL RETURNING {}").format(PHOTO_COLUMNS),
        (photo_id,)).fetchone()


# Stores ---------------------------------------------------------------------------------

# Store secrets are 32 random bytes (`new_secret`; `store set` takes at least 16 characters
# an operator generates): guessing one is 2^256 work whatever the hash, so stretching (the
# scrypt HO used before, ~16 MiB per check) buys nothing and lets a storm of token requests
# exhaust the API's memory. A keyed SHA-256 with a per-store random salt, compared in
# constant time, is enough for a secret of that entropy.
SECRET_HASH_SCHEME = "hmac-sha256"
# Verified (never written) so that hashes from before issue 19 keep working until the
# store's next token replaces them (`needs_rehash`).
_LEGACY_SCRYPT = "scrypt"


def hash_secret(secret: str) -> str:
    """A store secret's hash as stored in `sync_store.secret_hash`:
    `hmac-sha256$<salt hex>$<HMAC-SHA256(salt, secret) hex>`."""
    salt = secrets.token_bytes(16)
    digest = hmac.new(salt, secret.encode(), hashlib.sha256).hexdigest()
    return f"{SECRET_HASH_SCHEME}${salt.hex()}${digest}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether `secret` matches a stored hash (constant-time comparison); old scrypt hashes
    are still checked."""
    try:
        scheme, *fields = stored.split("$")
        if scheme == SECRET_HASH_SCHEME and len(fields) == 2:
            salt, digest = fields
            candidate = hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()
        elif scheme == _LEGACY_SCRYPT and len(fields) == 5:
            n, r, p, salt, digest = fields
            candidate = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), dklen=32,
                                       n=int(n), r=int(r), p=int(p)).hex()
        else:
            return False
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(candidate, digest)


def needs_rehash(stored: str) -> bool:
    """Whether a stored hash is in an old format, to be replaced once the secret is proven."""
    return not stored.startswith(SECRET_HASH_SCHEME + "$")


def upgrade_secret_hash(conn: psycopg.Connection, store_id: uuid.UUID, old_hash: str,
                        secret: str) -> None:
    """Replace a store's old-format hash with `hash_secret(secret)` (the secret was just
    verified against `old_hash`); tokens stay valid, and a rotation meanwhile wins."""
    conn.execute("UPDATE sync_store SET secret_hash = %s WHERE id = %s AND secret_hash = %s",
                 (hash_secret(secret), store_id, old_hash))


# Checked against when the store is unknown, so that an unknown id costs the same hash
# work as a known one and its answer time tells nothing about which ids exist.
DUMMY_SECRET_HASH = hash_secret(secrets.token_urlsafe(32))


def new_secret() -> str:
    """A fresh random store secret."""
    return secrets.token_urlsafe(32)


def get_store(conn: psycopg.Connection, store_id: uuid.UUID) -> dict | None:
    """A store's id, name, active flag, secret hash and token generation, or None."""
    return conn.execute("SELECT id, name, active, secret_hash, token_generation FROM sync_store "
                        "WHERE id = %s", (store_id,)).fetchone()


def list_stores(conn: psycopg.Connection) -> list[dict]:
    """Every store with its state and what it reported (synced, failed, last report)."""
    return conn.execute(
        "SELECT s.id, s.name, s.active, s.created_at, s.updated_at, "
        "count(st.photo_id) FILTER (WHERE st.status = 'synced') AS synced, "
        "count(st.photo_id) FILTER (WHERE st.status = 'failed') AS failed, "
        "max(st.reported_at) AS last_report_at "
        "FROM sync_store s LEFT JOIN photo_sync_status st ON st.store_id = s.id "
        "GROUP BY s.id ORDER BY s.name, s.id").fetchall()


def set_store(conn: psycopg.Connection, store_id: uuid.UUID, name: str,
              secret: str) -> tuple[str, bool]:
    """Make the store exist with this name and secret; never re-enables a disabled store.

    Returns (result, enabled): result is 'created', 'updated' or 'unchanged' (for
    Ansible's `changed`), enabled whether the store may get tokens. A rollout runs this
    for every store; enabling a store an operator disabled is `enable_store`'s job."""
    row = get_store(conn, store_id)
    if row is None:
        conn.execute("INSERT INTO sync_store (id, name, secret_hash) VALUES (%s, %s, %s)",
                     (store_id, name, hash_secret(secret)))
        return "created", True
    secret_ok = verify_secret(secret, row["secret_hash"])
    if secret_ok and row["name"] == name:
        return "unchanged", row["active"]
    conn.execute(
        "UPDATE sync_store SET name = %s, updated_at = now(), "
        "secret_hash = CASE WHEN %s THEN secret_hash ELSE %s END, "
        "token_generation = token_generation + CASE WHEN %s THEN 0 ELSE 1 END WHERE id = %s",
        (name, secret_ok, hash_secret(secret), secret_ok, store_id))
    return "updated", row["active"]


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


def disable_store(conn: psycopg.Connection, store_id: uuid.UUID) -> bool | None:
    """Disable a store; its tokens stop working at once.

    True when it was enabled, False when it already was disabled, None when unknown."""
    cur = conn.execute("UPDATE sync_store SET active = false, updated_at = now(), "
                       "token_generation = token_generation + 1 WHERE id = %s AND active",
                       (store_id,))
    if cur.rowcount == 1:
        return True
    return False if get_store(conn, store_id) is not None else None


def enable_store(conn: psycopg.Connection, store_id: uuid.UUID) -> bool | None:
    """Let a disabled store get tokens again (tokens from before it was disabled stay revoked).

    True when it was disabled, False when it already was enabled, None when unknown."""
    cur = conn.execute("UPDATE sync_store SET active = true, updated_at = now() "
                       "WHERE id = %s AND NOT active", (store_id,))
    if cur.rowcount == 1:
        return True
    return False if get_store(conn, store_id) is not None else None


def rotate_secret(conn: psycopg.Connection, store_id: uuid.UUID) -> str | None:
    """A new secret for a store (old tokens stop working), or None when it is unknown."""
    secret = new_secret()
    cur = conn.execute("UPDATE sync_store SET secret_hash = %s, updated_at = now(), "
                       "token_generation = token_generation + 1 WHERE id = %s",
                       (hash_secret(secret), store_id))
    return secret if cur.rowcount == 1 else None


# Status reports -------------------------------------------------------------------------

def record_statuses(conn: psycopg.Connection, store_id: uuid.UUID,
                    batch: list[dict]) -> set[uuid.UUID]:
    """Upsert a store's per-photo statuses; an older version never overwrites a newer one.

    Only photos the catalog has (live or tombstoned) are recorded, so a store's
    credentials cannot grow HO's tables with made-up ids. Returns the ids ignored."""
    with conn.transaction(), conn.cursor() as cur:
        ids = list({item["photo_id"] for item in batch})
        cur.execute("SELECT id FROM product_photo WHERE id = ANY(%s)", (ids,))
        known = {row["id"] if isinstance(row, dict) else row[0] for row in cur.fetchall()}
        rows = [(store_id, item["photo_id"], item["version"], item["status"], item["synced_at"],
                 item["error"]) for item in batch if item["photo_id"] in known]
        if rows:
            cur.executemany(
                "INSERT INTO photo_sync_status AS s (store_id, photo_id, version, status, "
                "synced_at, error) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (store_id, photo_id) DO UPDATE "
                "SET version = EXCLUDED.version, status = EXCLUDED.status, "
                "synced_at = EXCLUDED.synced_at, error = EXCLUDED.error, reported_at = now() "
                "WHERE s.version <= EXCLUDED.version", rows)
    return set(ids) - known


def store_statuses(conn: psycopg.Connection, store_id: uuid.UUID) -> dict[str, dict]:
    """{photo id: the store's last reported status row}."""
    rows = conn.execute("SELECT photo_id, version, status, synced_at, error FROM "
                        "photo_sync_status WHERE store_id = %s", (store_id,)).fetchall()
    return {str(r["photo_id"]): r for r in rows}


# Failed token requests ------------------------------------------------------------------

def auth_blocked(conn: psycopg.Connection, limits: dict[str, int], window: int) -> int:
    """Seconds until the most limited key may try again (0: none is over its limit).

    `limits` maps a key ('store:<uuid>@<ip>', 'addr:<ip>') to the failures it may have in
    the last `window` seconds (a sliding window)."""
    rows = conn.execute(
        "SELECT key, count(*) AS n, "
        "ceil(extract(epoch FROM min(failed_at) + make_interval(secs => %s) - now())) AS wait "
        "FROM auth_failure WHERE key = ANY(%s) AND failed_at > now() - make_interval(secs => %s) "
        "GROUP BY key", (window, list(limits), window)).fetchall()
    waits = [max(1, int(row["wait"] or 1)) for row in rows if row["n"] >= limits[row["key"]]]
    return max(waits, default=0)


def record_auth_failure(conn: psycopg.Connection, keys: list[str], window: int) -> None:
    """Count one failed token request against each key; drop what left the window.

    Blocked requests are not counted (they are refused before any secret is checked),
    so each key holds at most its limit of rows: the table stays small under attack."""
    with conn.transaction():
        conn.cursor().executemany("INSERT INTO auth_failure (key) VALUES (%s)",
                                  [(key,) for key in keys])
        conn.execute("DELETE FROM auth_failure WHERE failed_at < now() - make_interval(secs => %s)",
                     (window,))


def clear_auth_failures(conn: psycopg.Connection, key: str) -> None:
    """Forget a key's failures (a store that proved its secret from an address starts
    afresh there)."""
    conn.execute("DELETE FROM auth_failure WHERE key = %s", (key,))
