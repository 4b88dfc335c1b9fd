"""Test-bed services that survive losing a host: a PostgreSQL primary with a streaming
standby, and a SeaweedFS cluster (one master, several volume servers, filer + S3 gateway).

Everything binds 127.0.0.1 and lives in one folder, like `testbed`. The classes only
build the shapes docs/runbook-failover.md describes and give the tests the switches to
break them (kill a primary, promote a standby, SIGKILL a volume server).
"""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import subprocess
import time
from pathlib import Path

from support.testbed import (PostgresCluster, TestbedError, free_port, wait_for,
                             weed_binary, write_s3_identities)


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


class SeaweedCluster:
    """`weed master` + `volumes` x `weed volume` + `weed filer -s3`, each its own process,
    with every volume written to `replication` (SeaweedFS's xyz code: "001" is one more
    copy on another server of the same rack). Same credentials shape as SeaweedS3."""

    def __init__(self, root: Path, volumes: int = 3, replication: str = "001"):
        self.root = Path(root)
        self.volume_count = volumes
        self.replication = replication
        self.access_key = "testkey" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(16)
        self.processes: dict[str, subprocess.Popen] = {}
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _spawn(self, name: str, *args: str) -> None:
        # Each server keeps its sockets and temp files in its own folder, and the gRPC
        # port is the HTTP port + 10000 (SeaweedFS's default), which free_port reserved.
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        log = open(self.root / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(
            [weed_binary(), *args], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(folder)}, start_new_session=True)
        log.close()

    def start(self) -> "SeaweedCluster":
        self.root.mkdir(parents=True, exist_ok=True)
        config = write_s3_identities(self.root / "s3.json", self.access_key, self.secret_key)
        loopback = ("-ip=127.0.0.1", "-ip.bind=127.0.0.1")
        master = free_port(also_free=(10000,))
        self._spawn("master", "master", *loopback, f"-port={master}",
                    f"-mdir={self.root / 'master'}", f"-defaultReplication={self.replication}",
                    "-volumeSizeLimitMB=32", "-telemetry=false", "-peers=none")
        for index in range(self.volume_count):
            name = f"volume{index}"
            self._spawn(name, "volume", *loopback, f"-port={free_port(also_free=(10000,))}",
                        f"-dir={self.root / name}", f"-mserver=127.0.0.1:{master}", "-max=8")
        self.port = free_port(also_free=(10000,))
        filer = self.root / "filer"
        self._spawn("filer", "filer", *loopback, f"-port={free_port(also_free=(10000,))}",
                    f"-master=127.0.0.1:{master}", "-s3", f"-s3.port={self.port}",
                    f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                    f"-s3.localSocket={filer}/s3.sock", f"-localSocket={filer}/filer.sock",
                    f"-defaultStoreDir={filer}")
        wait_for(self._ready, 90, f"SeaweedFS cluster S3 on {self.endpoint}", interval=0.3)
        return self

    def _ready(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise TestbedError(f"weed {name} exited: see {self.root / (name + '.log')}")
        import io

        from minio import Minio
        client = Minio(self.endpoint, self.access_key, self.secret_key, secure=False,
                       region="us-east-1")
        # A write proves the master found enough volume servers for the replication.
        if not client.bucket_exists("probe"):
            client.make_bucket("probe")
        client.put_object("probe", "probe", io.BytesIO(b"x"), 1)
        return True

    def busiest_volume_server(self) -> str:
        """The volume server holding the most bytes (the one whose loss hurts most)."""
        def held(name: str) -> int:
            return sum(p.stat().st_size for p in (self.root / name).glob("*.dat"))
        return max((n for n in self.processes if n.startswith("volume")), key=held)

    def kill(self, name: str) -> None:
        """The host dies: SIGKILL, no goodbye to the master."""
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5  # throwaway data: no need to wait for a clean exit
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)

    close = stop
