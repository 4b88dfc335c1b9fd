"""The HO catalog loses its primary mid-sync and the standby is promoted.

The catalog is a streaming pair (tests/support/cluster.py's CatalogPair); HO runs under
gunicorn with the multi-host URL `...h1,h2/db?target_session_attrs=read-write`. A store's
full pull is slowed so that it is mid-run when the primary dies. While no host takes
writes HO answers 503 `catalog_unavailable` (never a 500); once the standby is promoted
the API's pool drops its dead connections and finds it, and the pull ends with every
photo byte-identical and its status reports on the new primary.

With a single-host URL (the primary only) the same test fails: after the kill nothing
HO connects to ever takes writes again, the pull ends in errors and no report lands.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import requests

from conftest import BIN, HOStack, assert_edge_matches_ho, assert_no_bad_bytes, ho_live_photos
from support import testbed
from support.cluster import CatalogPair
from photo_sync.protocol import API_PREFIX
from test_edge_faults import SMALL, synced_count, wait_until

pytestmark = pytest.mark.slow  # ~30-40 s: a catalog pair, a slowed pull, the edge's retries

COUNT = 30
# ~1.2 MB at 150 kB/s: about 8 s of pull, so the kill lands mid-run.
SLOW = {"bandwidth_limit": 150_000, "concurrency": 2, "page_size": 10, "retries": 8}


@pytest.fixture(scope="module")
def pair(bed_root):
    catalog = CatalogPair(bed_root / "catalog-pair").start()
    yield catalog
    catalog.stop()


def start_ho(name: str, env: dict, root, photos) -> HOStack:
    """An HO on the given catalog and S3 (conftest's ho_stack only knows the session's
    single ones), its catalog made and `photos` imported, gunicorn up."""
    root.mkdir()
    stack = HOStack(name, env, testbed.HOServer(root, env, workers=2, threads=4), root)
    stack.cli("init-db")
    stack.import_dir(photos)
    stack.server.start()
    return stack


@pytest.fixture(scope="module")
def ho(pair, s3, bed_root, photo_factory):
    env = testbed.ho_environment(pair.create_db("ho_failover"), s3, bucket="photos-failover")
    stack = start_ho("failover", env, bed_root / "ho_failover",
                     photo_factory(COUNT, seed=41, **SMALL))
    yield stack
    stack.server.stop()


def test_a_standby_is_never_used_for_writes(ho, pair):
    """A URL without target_session_attrs may land on the read-only standby; the pool's
    check refuses that connection, so a request that writes is a 503, not a 500 from
    "cannot execute ... in a read-only transaction". Runs before the failover test
    (file order), while the standby is still one."""
    from photo_sync.ho.app import create_app
    overrides = {key.removeprefix("PHOTO_SYNC_HO_"): value for key, value in ho.env.items()}
    overrides["DATABASE_URL"] = pair.standby.url("ho_failover")
    app = create_app(overrides)
    pool = app.extensions["photo_sync"].pool
    try:
        # A failed token request is recorded in the catalog (a write).
        response = app.test_client().post(f"{API_PREFIX}/auth/token/", json={
            "store_id": "00000000-0000-4000-8000-000000000000", "secret": "x" * 32})
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.get_json()["error"] == "catalog_unavailable"
    finally:
        pool.close()


def test_pull_survives_catalog_failover(ho, pair, make_edge):
    edge = make_edge(ho, **SLOW)
    live = ho_live_photos(ho)
    assert len(live) == COUNT
    session = ho.session(edge.store_id)
    testbed.wait_for(pair.caught_up, 30, "the standby replaying the import")

    pull = subprocess.Popen([str(BIN / "photo-sync-edge"), "pull", "--mode", "full", "--json"],
                            env={**os.environ, **edge.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: synced_count(edge) >= 5, 60, "the pull to be mid-run", pull)
        pair.kill_primary()

        # No host takes writes: HO says so in JSON, with a retry hint, and does not crash.
        listing = session.get(f"{ho.api}/sync/product-photos/", params={"limit": 5},
                              timeout=30)
        assert listing.status_code == 503, listing.text
        assert listing.json()["error"] == "catalog_unavailable"
        assert "Retry-After" in listing.headers
        assert pull.poll() is None, "the pull ended before the failover"

        pair.promote()
        out, err = pull.communicate(timeout=180)
    finally:
        if pull.poll() is None:
            pull.kill()
            pull.communicate()

    assert_no_bad_bytes(edge)
    if pull.returncode != 0:
        # The agent's retries ran out during the outage: the next scheduled run finishes.
        result, summary = edge.pull("incremental")
        assert result.returncode == 0, (out, err, result.stdout, result.stderr)
    assert_edge_matches_ho(edge, ho)

    # The API reaches the promoted standby, and every photo's report is recorded there.
    assert requests.get(f"{ho.api}/health/", timeout=30).status_code == 200
    with ho.catalog() as conn:
        assert conn.info.port == pair.standby.port
        rows = conn.execute("SELECT photo_id::text AS id, status, version FROM "
                            "photo_sync_status WHERE store_id = %s", (edge.store_id,)).fetchall()
    assert {r["id"]: (r["status"], r["version"]) for r in rows} == {
        photo_id: ("synced", version) for photo_id, (version, _) in live.items()}
    assert edge.cli("status", "--json").returncode == 0
