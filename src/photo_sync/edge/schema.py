"""The edge schema: `product_photo` with the bytes, plus the agent's own small tables.

The store may already have `product_photo` (metadata from other HO feeds): the
migration adds only what is missing and never drops data unless told to.
`plan()` inspects the database and returns the statements that would bring it
to the wanted state; `apply()` runs them in one transaction (or rolls back,
for check mode).
"""

from __future__ import annotations

import re

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from photo_sync import db, protocol
from photo_sync.errors import ConfigError, DatabaseUnavailable

# (name, type and default) of every column the edge needs, in creation order: the photo
# fields' columns (protocol.PHOTO_FIELDS, the field table), then the bytes and sync state.
COLUMNS = [(field.name, field.edge) for field in protocol.edge_fields()] + [
    ("image_binary", "bytea"),
    ("last_sync_at", "timestamptz"),
    ("sync_status", "varchar(20) DEFAULT 'pending'"),
    ("sync_error", "text"),
]
SYNC_COLUMNS = ("last_sync_at", "sync_status", "sync_error")
BYTES_COLUMN = "image_binary"
INDEXES = {"sync_status": "{table}_sync_status_idx", "last_sync_at": "{table}_last_sync_at_idx"}

AGENT_TABLES = {
    "photo_sync_state": """CREATE TABLE photo_sync_state (
        key text PRIMARY KEY,
        value text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now())""",
    "photo_sync_run": """CREATE TABLE photo_sync_run (
        id bigserial PRIMARY KEY,
        mode varchar(20) NOT NULL,
        status varchar(20) NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        listed integer NOT NULL DEFAULT 0,
        downloaded integer NOT NULL DEFAULT 0,
        unchanged integer NOT NULL DEFAULT 0,
        updated integer NOT NULL DEFAULT 0,
        deleted integer NOT NULL DEFAULT 0,
        failed integer NOT NULL DEFAULT 0,
        bytes bigint NOT NULL DEFAULT 0,
        duration_seconds double precision,
        error text)""",
    "photo_sync_outbox": """CREATE TABLE photo_sync_outbox (
        photo_id uuid PRIMARY KEY,
        version integer NOT NULL,
        status varchar(20) NOT NULL,
        synced_at timestamptz,
        error text,
        queued_at timestamptz NOT NULL DEFAULT clock_timestamp())""",
    "photo_sync_retry": """CREATE TABLE photo_sync_retry (
        photo_id uuid PRIMARY KEY,
        photo jsonb NOT NULL,
        attempts integer NOT NULL DEFAULT 1,
        last_error text,
        updated_at timestamptz NOT NULL DEFAULT now())""",
}
AGENT_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class SchemaError(ConfigError):
    """The migration cannot be planned as asked (bad table or role name, unknown state)."""


def _rows(conn: psycopg.Connection, query: str, params=()) -> list[tuple]:
    """Tuple rows whatever the connection's row factory."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def check_identifier(name: str, what: str) -> str:
    """`name` when it is a plain lower-case SQL identifier; SchemaError otherwise."""
    if not _IDENT.match(name or ""):
        raise SchemaError(f"{what} {name!r} is not a plain lower-case SQL identifier")
    return name


def _table_columns(conn: psycopg.Connection, table: str) -> dict[str, str]:
    rows = _rows(
        conn,
        "SELECT a.attname, a.attstorage FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE c.oid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped", (table,))
    return {row[0]: row[1] for row in rows}


def _existing_tables(conn: psycopg.Connection, names) -> set[str]:
    rows = _rows(conn, "SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') AND "
                 "relname = ANY(%s) AND pg_table_is_visible(oid)", (list(names),))
    return {row[0] for row in rows}


def _existing_indexes(conn: psycopg.Connection, names) -> set[str]:
    rows = _rows(conn, "SELECT relname FROM pg_class WHERE relkind = 'i' AND relname = ANY(%s) "
                 "AND pg_table_is_visible(oid)", (list(names),))
    return {row[0] for row in rows}


def _role_exists(conn: psycopg.Connection, role: str) -> bool:
    return bool(_rows(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)))


def _require_role(conn: psycopg.Connection, role: str) -> None:
    if not _role_exists(conn, role):
        raise SchemaError(f"role {role!r} does not exist: create it first "
                          f"(CREATE ROLE {role} LOGIN)")


def _has_privileges(conn: psycopg.Connection, role: str, table: str) -> bool:
    return all(_rows(conn, "SELECT has_table_privilege(%s, %s, %s)",
                     (role, table, priv.strip()))[0][0]
               for priv in AGENT_PRIVILEGES.split(","))


def plan(conn: psycopg.Connection, table: str = "product_photo", state: str = "present",
         drop_data: bool = False, grant_to: str | None = None,
         grant_select_to: tuple[str, ...] = ()) -> list[str]:
    """The SQL that brings the database to `state`; empty when it is there already.
    `grant_to` gets the agent's privileges; each of `grant_select_to` (a reader such as
    the store's photo server) SELECT on the photo table only."""
    check_identifier(table, "table")
    if grant_to:
        check_identifier(grant_to, "grant_to role")
    for reader in grant_select_to:
        check_identifier(reader, "grant_select_to role")
    t = sql.Identifier(table).as_string(conn)
    columns = _table_columns(conn, table)
    table_existed = bool(columns)
    tables = _existing_tables(conn, AGENT_TABLES)
    index_names = {col: name.format(table=table) for col, name in INDEXES.items()}
    indexes = _existing_indexes(conn, index_names.values())
    statements: list[str] = []

    if state == "absent":
        for name in sorted(index_names.values()):
            if name in indexes:
                statements.append(f"DROP INDEX {sql.Identifier(name).as_string(conn)}")
        for col in SYNC_COLUMNS + ((BYTES_COLUMN,) if drop_data else ()):
            if col in columns:
                statements.append(f"ALTER TABLE {t} DROP COLUMN {col}")
        if drop_data:
            for name in sorted(tables):
                statements.append(f"DROP TABLE {name}")
        return statements
    if state != "present":
        raise SchemaError(f"state must be present or absent, not {state!r}")

    if not columns:
        cols = ",\n    ".join(f"{name} {decl}" + (" PRIMARY KEY" if name == "id" else "")
                              for name, decl in COLUMNS)
        statements.append(f"CREATE TABLE {t} (\n    {cols})")
        columns = {name: "x" for name, _ in COLUMNS}
        storage = "x"
    else:
        for name, decl in COLUMNS:
            if name not in columns:
                statements.append(f"ALTER TABLE {t} ADD COLUMN {name} {decl}")
        storage = columns.get(BYTES_COLUMN, "x")
    # JPEG does not compress: pglz would spend CPU on every write for nothing.
    if storage != "e":
        statements.append(f"ALTER TABLE {t} ALTER COLUMN {BYTES_COLUMN} SET STORAGE EXTERNAL")
    for col, name in index_names.items():
        if name not in indexes:
            statements.append(f"CREATE INDEX {sql.Identifier(name).as_string(conn)} "
                              f"ON {t} ({col})")
    for name, ddl in AGENT_TABLES.items():
        if name not in tables:
            statements.append(ddl)
    if grant_to:
        _require_role(conn, grant_to)
        role = sql.Identifier(grant_to).as_string(conn)
        for name in (table, *AGENT_TABLES):
            exists = table_existed if name == table else name in tables
            if not exists or not _has_privileges(conn, grant_to, name):
                statements.append(f"GRANT {AGENT_PRIVILEGES} ON {name} TO {role}")
        seq = "photo_sync_run_id_seq"
        if "photo_sync_run" not in tables or not _rows(
                conn, "SELECT has_sequence_privilege(%s, %s, 'USAGE')", (grant_to, seq))[0][0]:
            statements.append(f"GRANT USAGE, SELECT ON SEQUENCE {seq} TO {role}")
    for reader in grant_select_to:
        _require_role(conn, reader)
        if not table_existed or not _rows(conn, "SELECT has_table_privilege(%s, %s, 'SELECT')",
                                          (reader, table))[0][0]:
            statements.append(f"GRANT SELECT ON {t} TO {sql.Identifier(reader).as_string(conn)}")
    return statements


def apply(conn: psycopg.Connection, statements: list[str], commit: bool = True) -> None:
    """Run `statements` in one transaction; with commit=False roll back (check mode)."""
    if conn.autocommit:
        raise SchemaError("apply() needs a connection outside autocommit")
    try:
        for statement in statements:
            conn.execute(statement)
    except psycopg.Error:
        conn.rollback()
        raise
    if commit:
        conn.commit()
    else:
        conn.rollback()


def ensure(database_url: str, table: str = "product_photo", state: str = "present",
           drop_data: bool = False, grant_to: str | None = None,
           grant_select_to: tuple[str, ...] = (), check_only: bool = False,
           setting: str = "PHOTO_SYNC_EDGE_DATABASE_URL") -> list[str]:
    """Plan and (unless check_only) apply; returns the statements. One call for CLI and module.
    A database failure is a DatabaseUnavailable naming `setting` (where the URL came from)."""
    with db.connect(database_url, setting=setting) as conn:
        try:
            # Two migrations at once (a timer and a playbook) would race on the DDL.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('photo_sync_schema'))")
            statements = plan(conn, table, state, drop_data, grant_to, tuple(grant_select_to))
            if statements:
                # Check mode runs the DDL too, then rolls back: it proves the DDL would work.
                apply(conn, statements, commit=not check_only)
            else:
                conn.rollback()
        except psycopg.OperationalError as exc:
            raise db.unavailable(exc, setting) from None
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"migrating table {table} failed, nothing was changed "
                                      f"({db.first_line(exc)}): check the database role's "
                                      "privileges, or run as the table's owner") from None
    return statements


def missing(conn: psycopg.Connection, table: str = "product_photo") -> list[str]:
    """What the agent needs that is not there (empty when the schema is ready)."""
    columns = _table_columns(conn, table)
    gaps = [f"column {table}.{name}" for name, _ in COLUMNS if name not in columns]
    if not columns:
        gaps = [f"table {table}"]
    gaps += [f"table {name}" for name in AGENT_TABLES
             if name not in _existing_tables(conn, AGENT_TABLES)]
    return gaps
