"""The real test bed: PostgreSQL, SeaweedFS S3 and the HO API under gunicorn, on loopback.

Session-scoped services; each test module that changes the catalog asks for
its own HO stack (a fresh database, bucket and gunicorn) with `ho_stack()`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from support import testbed
from photo_sync.protocol import API_PREFIX

BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def bed_root():
    root = testbed.tempdir("photo-sync-tests-")
    yield root
    if not os.environ.get("PHOTO_SYNC_KEEP_TESTBED"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg(bed_root):
    cluster = testbed.PostgresCluster(bed_root / "pg").start()
    yield cluster
    cluster.stop("immediate")


@pytest.fixture(scope="session")
def s3(bed_root):
    server = testbed.SeaweedS3(bed_root / "s3").start()
    yield server
    server.stop()


@dataclass
class HOStack:
    """One HO: catalog database, bucket, gunicorn, and helpers to drive it like an operator."""

    name: str
    env: dict
    server: testbed.HOServer
    root: Path
    stores: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def api(self) -> str:
        return self.server.url + API_PREFIX

    @property
    def database_url(self) -> str:
        return self.env["PHOTO_SYNC_HO_DATABASE_URL"]

    def cli(self, *args: str, input: str | None = None, check: bool = True):
        result = subprocess.run([str(BIN / "photo-sync-ho"), *args], env={**os.environ, **self.env},
                                capture_output=True, text=True, input=input, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"photo-sync-ho {' '.join(args)} failed "
                                 f"({result.returncode}): {result.stderr}")
        return result

    def import_dir(self, directory: Path) -> str:
        return self.cli("import", str(directory)).stdout

    def add_store(self, name: str = "store") -> tuple[str, str]:
        store_id = str(uuid.uuid4())
        secret = self.cli("store", "add", store_id, "--name", name).stdout.split()[-1]
        self.stores[store_id] = secret
        return store_id, secret

    def ask_token(self, store_id: str, secret: str, headers: dict | None = None
                  ) -> requests.Response:
        """The token endpoint's answer as it is (a refusal included). No session: a new
        connection per request, so gunicorn hands them to either worker."""
        return requests.post(f"{self.api}/auth/token/", timeout=30, headers=headers,
                             json={"store_id": store_id, "secret": secret})

    def token(self, store_id: str, secret: str | None = None) -> str:
        response = self.ask_token(store_id, secret or self.stores[store_id])
        response.raise_for_status()
        return response.json()["access"]

    def list_photos(self, token: str) -> requests.Response:
        """The first feed page's answer for a bearer token, as it is."""
        return requests.get(f"{self.api}/sync/product-photos/", timeout=30,
                            headers={"Authorization": f"Bearer {token}"})

    def session(self, store_id: str) -> requests.Session:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {self.token(store_id)}"
        return s

    def catalog(self):
        from photo_sync.ho import catalog
        return catalog.connect(self.database_url, autocommit=True)


@pytest.fixture(scope="session")
def ho_stack(pg, s3, bed_root):
    """Factory: `ho_stack("name")` -> a fresh HOStack; all stopped at the end of the session."""
    stacks: list[HOStack] = []

    def make(name: str, workers: int = 2, threads: int = 8, extra_env: dict | None = None):
        db = f"ho_{name}_{len(stacks)}"
        url = pg.create_db(db)
        env = testbed.ho_environment(url, s3, bucket=f"photos-{name}-{len(stacks)}".lower()
                                     .replace("_", "-"))
        env.update(extra_env or {})
        root = bed_root / db
        root.mkdir()
        stack = HOStack(name, env, testbed.HOServer(root, env, workers, threads), root)
        stack.cli("init-db")
        stack.server.start()
        stacks.append(stack)
        return stack

    yield make
    # Every gunicorn at once: one after the other, the session's ~30 stacks took most of its
    # teardown (15 s), and each xdist worker pays it.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda stack: stack.server.stop(), stacks))


@pytest.fixture(scope="session")
def photo_factory(bed_root):
    """Factory: `photo_factory(count, seed)` -> a folder of real JPEGs (per-product folders)."""
    counter = iter(range(10**6))

    def make(count: int, seed: int = 1, **kwargs) -> Path:
        folder = bed_root / "photos" / f"set-{next(counter)}"
        testbed.make_photo_set(folder, count, seed=seed, **kwargs)
        return folder

    return make


@dataclass
class Edge:
    """One store: its own database, registered at an HO stack, driven through the real CLI."""

    ho: HOStack
    store_id: str
    secret: str
    database_url: str
    env: dict

    def cli(self, *args: str, check: bool = False, timeout: float = 300, extra_env=None):
        return subprocess.run([str(BIN / "photo-sync-edge"), *args],
                              env={**os.environ, **self.env, **(extra_env or {})},
                              capture_output=True, text=True, timeout=timeout)

    def pull(self, mode: str = "incremental", *more: str, extra_env=None):
        import json
        result = self.cli("pull", "--mode", mode, "--json", *more, extra_env=extra_env)
        summary = json.loads(result.stdout) if result.stdout.strip().startswith("{") else None
        return result, summary

    def db(self):
        import psycopg
        return psycopg.connect(self.database_url, autocommit=True)

    def photos(self) -> dict:
        """{photo_id: (version, checksum, sync_status, bytes or None)} held by the store."""
        with self.db() as conn:
            rows = conn.execute("SELECT id::text, version, checksum, sync_status, image_binary "
                                "FROM product_photo").fetchall()
        return {r[0]: (r[1], r[2], r[3], bytes(r[4]) if r[4] is not None else None) for r in rows}

    def write_config(self, path: Path) -> Path:
        path.write_text("".join(f"{k}={v}\n" for k, v in self.env.items()))
        path.chmod(0o600)
        return path


def ho_live_photos(ho: HOStack) -> dict:
    """{photo_id: (version, checksum)} of HO's live photos."""
    with ho.catalog() as conn:
        rows = conn.execute("SELECT id::text AS id, version, checksum FROM product_photo "
                            "WHERE deleted_at IS NULL").fetchall()
    return {r["id"]: (r["version"], r["checksum"]) for r in rows}


def assert_edge_matches_ho(edge: Edge, ho: HOStack) -> None:
    """The store holds exactly HO's live photos, each synced with bytes matching its checksum."""
    import hashlib
    held = edge.photos()
    live = ho_live_photos(ho)
    assert set(held) == set(live), (f"missing at store: {set(live) - set(held)}; "
                                    f"extra at store: {set(held) - set(live)}")
    for photo_id, (version, checksum) in live.items():
        e_version, e_checksum, status, data = held[photo_id]
        assert (e_version, e_checksum, status) == (version, checksum, "synced"), photo_id
        assert data is not None and hashlib.md5(data).hexdigest() == checksum, photo_id


def assert_no_bad_bytes(edge: Edge) -> None:
    """No row is marked synced with bytes that fail its checksum."""
    import hashlib
    for photo_id, (_, checksum, status, data) in edge.photos().items():
        if status == "synced":
            assert data is not None and hashlib.md5(data).hexdigest() == checksum, photo_id
        if data is not None and status != "failed":
            assert hashlib.md5(data).hexdigest() == checksum, photo_id


@pytest.fixture(scope="session")
def make_edge(pg):
    """Factory: `make_edge(ho, schema=True, **env)` -> an Edge registered at `ho`."""
    counter = iter(range(10**6))

    def make(ho: HOStack, schema: bool = True, ho_url: str | None = None, **env) -> Edge:
        store_id, secret = ho.add_store(f"store-{next(counter)}")
        url = pg.create_db(f"edge_{store_id.replace('-', '')[:16]}")
        edge_env = {
            "PHOTO_SYNC_EDGE_DATABASE_URL": url,
            "PHOTO_SYNC_EDGE_HO_URL": ho_url or ho.url,
            "PHOTO_SYNC_EDGE_STORE_ID": store_id,
            "PHOTO_SYNC_EDGE_STORE_SECRET": secret,
            "PHOTO_SYNC_EDGE_RETRIES": "2",
            "PHOTO_SYNC_EDGE_TIMEOUT": "10",
        }
        edge_env.update({f"PHOTO_SYNC_EDGE_{k.upper()}": str(v) for k, v in env.items()})
        edge = Edge(ho, store_id, secret, url, edge_env)
        if schema:
            result = edge.cli("schema", "apply")
            assert result.returncode == 0, result.stderr
        return edge

    return make
