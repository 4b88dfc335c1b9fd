"""Connections to PostgreSQL, for the edge agent and HO alike.

Every session photo-sync opens sets `statement_timeout` and `lock_timeout`, so
a stuck lock or a runaway statement ends as an error an operator can read,
never as a run (or a gunicorn thread) that hangs until systemd kills it.
A connection failure is worded once, here.

A catalog may be a primary with standbys behind a multi-host URL
(`postgresql://u@h1:5432,h2:5432/db?target_session_attrs=read-write`): libpq tries
the hosts in turn and keeps the one that takes writes. A pool must then drop a
connection whose host died or stopped taking writes and open the next one against
whichever host is primary now; `check_writable` and `RECONNECT_TIMEOUT` are that part.
"""

from __future__ import annotations

import psycopg

from photo_sync.errors import DatabaseUnavailable, first_line

CONNECT_TIMEOUT = 10  # seconds
STATEMENT_TIMEOUT_MS = 120_000  # the largest write batch (16 MB of bytea) takes < 1 s here
LOCK_TIMEOUT_MS = 15_000
# psycopg_pool doubles the wait between reconnection attempts until it gives up on one
# (5 minutes by default): after a 20 s failover the next try could be half a minute away.
# Giving up after this long instead lets the next request that needs a connection start
# a fresh attempt, so a promoted standby is found within seconds.
RECONNECT_TIMEOUT = 10.0  # seconds


def session_options(statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
                    lock_timeout_ms: int = LOCK_TIMEOUT_MS) -> str:
    """The libpq `options` string that sets the session's timeouts."""
    return (f"-c statement_timeout={int(statement_timeout_ms)} "
            f"-c lock_timeout={int(lock_timeout_ms)}")


def connect_kwargs(statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
                   lock_timeout_ms: int = LOCK_TIMEOUT_MS) -> dict:
    """Keyword arguments for `psycopg.connect` or a `psycopg_pool` pool's `kwargs`."""
    return {"connect_timeout": CONNECT_TIMEOUT,
            "options": session_options(statement_timeout_ms, lock_timeout_ms)}


def connect(url: str, *, setting: str, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
            lock_timeout_ms: int = LOCK_TIMEOUT_MS, **kwargs) -> psycopg.Connection:
    """A connection with the session timeouts set; `DatabaseUnavailable` naming `setting`
    (the variable or option that holds the URL) when it cannot be had."""
    try:
        return psycopg.connect(url, **connect_kwargs(statement_timeout_ms, lock_timeout_ms),
                               **kwargs)
    except psycopg.Error as exc:
        raise unavailable(exc, setting) from None
    except Exception as exc:  # a malformed URL raises ProgrammingError or ValueError
        raise DatabaseUnavailable(f"cannot use the database URL in {setting} "
                                  f"({type(exc).__name__}): check its syntax") from None


def check_writable(conn: psycopg.Connection) -> None:
    """A pool's `check` callback: raise unless `conn` still answers and its server takes
    writes, so the pool discards it and opens another (against the new primary).

    The round trip also delivers the `in_hot_standby` status PostgreSQL (14+) reports on
    every session; it is "on" for a standby, so a URL without target_session_attrs that
    lands on one is refused here too, with no extra query."""
    from psycopg_pool import ConnectionPool
    ConnectionPool.check_connection(conn)
    if conn.info.parameter_status("in_hot_standby") == "on":
        raise psycopg.OperationalError("the database server is a read-only standby")


def unavailable(exc: BaseException, setting: str) -> DatabaseUnavailable:
    """The one wording of 'the database failed us', for connection and query errors."""
    return DatabaseUnavailable(f"cannot use the database ({first_line(exc)}): check {setting} "
                               "and that PostgreSQL is running")
