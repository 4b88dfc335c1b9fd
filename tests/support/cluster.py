"""Test-bed services that survive losing a host: a PostgreSQL primary with a streaming
standby, and a SeaweedFS cluster (one master, several volume servers, filer + S3 gateway).

Everything binds 127.0.0.1 and lives in one folder, like `testbed`. The classes only
build the shapes docs/runbook-failover.md describes and give the tests the switches to
break them (kill a primary, promote a standby, SIGKILL a volume server).
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from support.testbed import PostgresCluster, wait_for


class CatalogPair:
    """A primary and a standby made from it with `pg_basebackup -R`, streaming, with
    synchronous commit for the catalog database: a write HO acknowledged is on both."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.primary = PostgresCluster(self.root / "primary")
        self.standby = PostgresCluster(self.root / "standby")

    def start(self) -> "CatalogPair":
        self.primary.start()
        root = self.standby.root
        root.mkdir(parents=True, exist_ok=True)
        if self.standby._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(root, pw.pw_uid, pw.pw_gid)
        # -R writes primary_conninfo and standby.signal: the copy starts as a hot standby.
        self.standby._run(self.standby.bin / "pg_basebackup", "-h", "127.0.0.1",
                          "-p", str(self.primary.port), "-U", "postgres",
                          "-D", self.standby.data, "-R", "-X", "stream", "--no-sync")
        self.standby.start()
        # Set after the base backup, so the standby's copy of postgresql.auto.conf does not
        # carry it: a promoted standby that waits for a synchronous standby of its own
        # (there is none yet) would hang every commit.
        self._sql(self.primary, "ALTER SYSTEM SET synchronous_standby_names = '*'",
                  "SELECT pg_reload_conf()")
        wait_for(self._streaming, 30, "the standby streaming from the primary")
        return self

    @staticmethod
    def _sql(cluster: PostgresCluster, *statements: str) -> list:
        """Run `statements` on `cluster` in turn; the rows of the last one."""
        import psycopg
        rows: list = []
        with psycopg.connect(cluster.url(), autocommit=True, connect_timeout=5) as conn:
            for statement in statements:
                cursor = conn.execute(statement)
                rows = cursor.fetchall() if cursor.description else []
        return rows

    def _streaming(self) -> bool:
        rows = self._sql(self.primary, "SELECT state, sync_state FROM pg_stat_replication")
        return rows == [("streaming", "sync")]

    def create_db(self, name: str) -> str:
        """A database on the primary (replicated to the standby), committing synchronously
        whatever the server-wide default says; its multi-host URL."""
        self.primary.create_db(name)
        self._sql(self.primary, f'ALTER DATABASE "{name}" SET synchronous_commit = on')
        return self.url(name)

    def url(self, dbname: str) -> str:
        """The multi-host URL the API hosts use: whichever host takes writes."""
        return (f"postgresql://postgres@127.0.0.1:{self.primary.port},"
                f"127.0.0.1:{self.standby.port}/{dbname}?target_session_attrs=read-write")

    def caught_up(self) -> bool:
        """True when the standby has replayed everything the primary has written."""
        lsn = self._sql(self.primary, "SELECT pg_current_wal_lsn()::text")[0][0]
        return self._sql(self.standby, "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), "
                                       f"'{lsn}') >= 0")[0][0]

    def kill_primary(self) -> None:
        """The primary's host dies: no shutdown checkpoint, connections cut."""
        self.primary.stop("immediate")

    def promote(self) -> None:
        """The operator's failover step: the standby takes writes."""
        self.standby._run(self.standby.bin / "pg_ctl", "-D", self.standby.data, "-w",
                          "promote")

    def stop(self) -> None:
        for cluster in (self.primary, self.standby):
            cluster.stop("immediate")

    close = stop

