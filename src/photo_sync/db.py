"""Connections to PostgreSQL, for the edge agent and HO alike.

Every session photo-sync opens sets `statement_timeout` and `lock_timeout`, so
a stuck lock or a runaway statement ends as an error an operator can read,
never as a run (or a gunicorn thread) that hangs until systemd kills it.
A connection failure is worded once, here.
"""

from __future__ import annotations

import psycopg

from photo_sync.errors import DatabaseUnavailable, first_line

CONNECT_TIMEOUT = 10  # seconds
STATEMENT_TIMEOUT_MS = 120_000  # the largest write batch (16 MB of bytea) takes < 1 s here
LOCK_TIMEOUT_MS = 15_000


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


def unavailable(exc: BaseException, setting: str) -> DatabaseUnavailable:
    """The one wording of 'the database failed us', for connection and query errors."""
    return DatabaseUnavailable(f"cannot use the database ({first_line(exc)}): check {setting} "
                               "and that PostgreSQL is running")
