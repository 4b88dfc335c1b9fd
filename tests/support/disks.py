"""What the store-disk and backup tests share: a small file system under the store's photo
table, a store clock that runs off HO's, and pg_dump / pg_restore of a database.

All of it works on the test bed's own PostgreSQL cluster and temp folders; a mount needs
root (`need_root()` skips the test otherwise).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from support.testbed import find_pg_bin


def need_root() -> None:
    """Skip the calling test when it cannot mount a file system."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the test mounts a small tmpfs to fill the store's disk")


class SmallDisk:
    """A tmpfs of `size_mb` holding a PostgreSQL tablespace; the store's photo table moves
    onto it, so the table runs out of space while the rest of the database does not."""

    def __init__(self, folder: Path, size_mb: int):
        self.folder = Path(folder)
        self.size_mb = size_mb
        self.tablespace = f"small_{uuid.uuid4().hex[:10]}"
        self.mounted = False

    def mount(self) -> "SmallDisk":
        self.folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0700",
                        "tmpfs", str(self.folder)], check=True, capture_output=True)
        self.mounted = True
        pw = pwd.getpwnam("postgres")
        os.chown(self.folder, pw.pw_uid, pw.pw_gid)
        return self

    def grow(self, size_mb: int) -> None:
        """What an operator does when the volume is full: give it more space."""
        subprocess.run(["mount", "-o", f"remount,size={size_mb}m", str(self.folder)],
                       check=True, capture_output=True)
        self.size_mb = size_mb

    def move_table(self, database_url: str, table: str = "product_photo") -> None:
        """Create the tablespace and move `table` (its TOAST data with it) onto it."""
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"CREATE TABLESPACE {self.tablespace} LOCATION '{self.folder}'")
            conn.execute(f"ALTER TABLE {table} SET TABLESPACE {self.tablespace}")

    def free_bytes(self) -> int:
        st = os.statvfs(self.folder)
        return st.f_bavail * st.f_frsize

    def close(self, admin_url: str, database_url: str) -> None:
        """Drop the store database and the tablespace, then unmount (lazily if PostgreSQL
        still holds a file open)."""
        try:
            dbname = database_url.rsplit("/", 1)[1]
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
                conn.execute(f"DROP TABLESPACE IF EXISTS {self.tablespace}")
        finally:
            if self.mounted:
                done = subprocess.run(["umount", str(self.folder)], capture_output=True)
                if done.returncode != 0:
                    subprocess.run(["umount", "-l", str(self.folder)], capture_output=True)
                self.mounted = False


@contextlib.contextmanager
def small_disk(folder: Path, size_mb: int, admin_url: str, database_url: str):
    """A mounted SmallDisk, always dropped and unmounted at the end."""
    disk = SmallDisk(folder, size_mb)
    try:
        yield disk.mount()
    finally:
        disk.close(admin_url, database_url)


def skew_clock(monkeypatch, seconds: float) -> None:
    """Run this process's wall clock (`time.time`, which the agent's timestamps read)
    `seconds` off the real one; HO, in its own processes, keeps the real clock."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + seconds)


def _pg_tool(tool: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([str(find_pg_bin() / tool), *args], capture_output=True, text=True,
                            timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"{tool} failed: {result.stderr}")
    return result


def dump(database_url: str, path: Path) -> Path:
    """`pg_dump -Fc` of a database: the nightly backup."""
    _pg_tool("pg_dump", "-Fc", "-f", str(path), "-d", database_url)
    return path


def restore_in_place(database_url: str, path: Path) -> None:
    """`pg_restore --clean` into the same database: its tables (and sequences) go back to
    the dump's state; the database itself stays."""
    _pg_tool("pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction",
             "-d", database_url, str(path))


def restore_fresh(admin_url: str, database_url: str, path: Path) -> None:
    """Drop the database and restore the dump into a new one of the same name (what a
    restore onto a rebuilt server does)."""
    dbname = database_url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')
    _pg_tool("pg_restore", "--no-owner", "--single-transaction", "-d", database_url, str(path))
