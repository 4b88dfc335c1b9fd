"""One error model for every entry point: the edge and HO CLIs and the Ansible modules.

An operator meets photo-sync's failures in three places (a terminal, a systemd
journal, an Ansible task). Each failure is one `PhotoSyncError` subclass that
carries the exit code and the operator's message, worded once here or where
it is raised; each entry point catches `PhotoSyncError` in one place and
prints `str(exc)` (CLI) or passes it to `fail_json` (modules). Nothing else
turns an exception into words.
"""

from __future__ import annotations

# Exit codes of `photo-sync-edge` and `photo-sync-ho` (docs/operator-interface.md, "Exit codes").
EXIT_OK = 0
EXIT_PARTIAL = 1  # done, but some photos failed, or drift found, or deletions refused
EXIT_CONFIG = 2  # bad usage or configuration (also: schema missing, database unreachable)
EXIT_LOCKED = 3  # another run holds the lock
EXIT_HO = 4  # HO unreachable or refused


class PhotoSyncError(Exception):
    """A failure an operator must act on; `str(exc)` says what happened and what to do."""

    exit_code = EXIT_PARTIAL


class ConfigError(PhotoSyncError):
    """A setting is missing or malformed; the message names it (never echoes its value
    when the value may be a secret)."""

    exit_code = EXIT_CONFIG


class SchemaMissing(PhotoSyncError):
    """The edge schema (table, columns, agent tables) is not in place."""

    exit_code = EXIT_CONFIG


class DatabaseUnavailable(PhotoSyncError):
    """A PostgreSQL database cannot be reached or used (see `photo_sync.db.connect`)."""

    exit_code = EXIT_CONFIG


class LockHeld(PhotoSyncError):
    """Another sync run holds this store database's run lock."""

    exit_code = EXIT_LOCKED


class DeleteRefused(PhotoSyncError):
    """A run would delete more of the store's photos than `max_delete_fraction` allows."""

    exit_code = EXIT_PARTIAL


class HOUnreachable(PhotoSyncError):
    """HO cannot be reached, keeps failing, or refuses this store's credentials."""

    exit_code = EXIT_HO

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the HTTP status HO kept answering; None: no answer at all


class HOError(PhotoSyncError):
    """HO answered, but not with what we asked for (a 4xx about this request)."""

    exit_code = EXIT_HO

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(f"HTTP {status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class StorageUnavailable(PhotoSyncError):
    """HO's S3 store cannot be reached or answers with an error."""

    exit_code = EXIT_CONFIG


class StorageRefused(StorageUnavailable):
    """HO's S3 store answers but refuses HO's request (403: a wrong or rotated key, clocks
    too far apart, an expired presign): the bytes may well be there. `code` is S3's."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (psycopg errors run to several lines, the
    later ones quoting SQL), or its type name when it has no text."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
