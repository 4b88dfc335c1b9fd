"""A gateway pair: two nginx gateways (the role's template) in front of the same API.

The store's PHOTO_SYNC_EDGE_HO_URL names both; the agent keeps to the first and moves to
the second when the first gives no answer or answers 502/504 (`edge/http/failover.py`).
One gateway is killed mid-pull and the run completes byte-identical through the other.
With a single gateway URL the same kill ends the run in an error naming that gateway:
the pair is what keeps the store syncing. When every gateway is down the error names
each URL tried.

Real gunicorn, PostgreSQL and SeaweedFS behind real nginx, all on loopback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import pytest

from conftest import BIN, assert_edge_matches_ho, assert_no_bad_bytes, ho_live_photos
from support import gateway as gw_support
from support import testbed
from photo_sync.config import ConfigError
from photo_sync.edge.settings import EdgeSettings
from test_edge_faults import SMALL, synced_count, wait_until

pytestmark = pytest.mark.skipif(gw_support.nginx_missing() is not None,
                                reason=gw_support.nginx_missing() or "")

COUNT = 40
# ~1.2 MB at 120 kB/s: about 10 s of pull, so the kill lands mid-run.
SLOW = {"bandwidth_limit": 120_000, "concurrency": 2, "page_size": 10}
ACCEL = {"PHOTO_SYNC_HO_ACCEL_REDIRECT": "true", "PHOTO_SYNC_HO_TRUSTED_PROXIES": "1"}
DOWNLOAD = "/download/"


@pytest.fixture(scope="module")
def ho(ho_stack, photo_factory):
    stack = ho_stack("gateway-pair", extra_env=ACCEL)
    stack.import_dir(photo_factory(COUNT, seed=131, **SMALL))
    return stack


@pytest.fixture
def gateways(ho, s3, tmp_path):
    """Factory: `gateways(n)` -> n started gateways in front of `ho`'s one API host,
    sharing one certificate (as a pair behind one name would)."""
    started = []

    def make(count: int = 2):
        tls = None
        for n in range(count):
            gateway = gw_support.Gateway(tmp_path / f"gw{n}", [f"127.0.0.1:{ho.server.port}"],
                                         s3.endpoint, ho.env["PHOTO_SYNC_HO_S3_BUCKET"], tls=tls)
            tls = gateway.tls
            started.append(gateway.start())
        return started[-count:]

    yield make
    for gateway in started:
        gateway.stop()


def kill(gateway) -> None:
    """The gateway's host is gone: nginx's master and workers die at once, mid-request."""
    os.killpg(gateway.process.pid, signal.SIGKILL)
    gateway.process.wait(10)


def downloads(gateway) -> int:
    return sum(1 for entry in gateway.access_entries() if entry["path"].endswith(DOWNLOAD))


def start_pull(edge) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "photo-sync-edge"), "pull", "--mode", "full", "--json"],
                            env={**os.environ, **edge.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def pull_killing_first_gateway(edge, first):
    """Run a full pull; once 5 photos are stored, kill `first`. (returncode, out, err,
    downloads `first` served before it died)."""
    pull = start_pull(edge)
    try:
        wait_until(lambda: synced_count(edge) >= 5, 60, "the pull to be mid-run", pull)
        served = downloads(first)
        kill(first)
        out, err = pull.communicate(timeout=180)
    finally:
        if pull.poll() is None:
            pull.kill()
            pull.communicate()
    return pull.returncode, out, err, served


def test_pull_survives_losing_one_gateway_of_a_pair(ho, gateways, make_edge):
    first, second = gateways(2)
    edge = make_edge(ho, ho_url=f"{first.url},{second.url}",
                     ca_bundle=str(first.tls.ca_path), **SLOW)

    returncode, out, err, served_by_first = pull_killing_first_gateway(edge, first)

    assert returncode == 0, err
    summary = json.loads(out)
    assert summary["failed"] == 0 and summary["downloaded"] == COUNT, summary
    assert_edge_matches_ho(edge, ho)
    assert_no_bad_bytes(edge)
    # Sticky: the first gateway carried the run until it died, the second the rest.
    assert served_by_first >= 5
    assert downloads(second) >= COUNT - served_by_first
    # The store's status reports reached HO through the survivor.
    with ho.catalog() as conn:
        rows = conn.execute("SELECT photo_id::text AS id, version FROM photo_sync_status "
                            "WHERE store_id = %s AND status = 'synced'",
                            (edge.store_id,)).fetchall()
    assert {r["id"]: r["version"] for r in rows} == {
        photo_id: version for photo_id, (version, _) in ho_live_photos(ho).items()}


def test_a_single_gateway_url_does_not_survive_losing_it(ho, gateways, make_edge):
    """The same kill with only the first gateway's URL: the run ends in an error that
    names it, and the store holds only what came before."""
    (only,) = gateways(1)
    edge = make_edge(ho, ho_url=only.url, ca_bundle=str(only.tls.ca_path), **SLOW)

    returncode, out, err, _ = pull_killing_first_gateway(edge, only)

    assert returncode != 0, out
    assert f"cannot reach HO API at {only.url}" in err
    assert 5 <= synced_count(edge) < COUNT


def test_a_gateway_that_cannot_reach_the_api_is_passed_over(ho, gateways, make_edge, s3,
                                                            tmp_path):
    """A gateway whose API hosts are all down answers 502: the agent takes the next one
    without spending a retry (retries=0 here), and stays there."""
    (live,) = gateways(1)
    cut_off = gw_support.Gateway(tmp_path / "cut-off", [f"127.0.0.1:{testbed.free_port()}"],
                                 s3.endpoint, "none", tls=live.tls).start()
    try:
        edge = make_edge(ho, ho_url=f"{cut_off.url},{live.url}",
                         ca_bundle=str(live.tls.ca_path), retries=0)
        result, summary = edge.pull("full")
        assert result.returncode == 0, result.stderr
        assert summary["failed"] == 0 and summary["downloaded"] == COUNT
        assert_edge_matches_ho(edge, ho)
        assert [entry["status"] for entry in cut_off.access_entries()] == [502]
        assert downloads(live) == COUNT
    finally:
        cut_off.stop()


def test_every_gateway_down_names_each_url_tried(ho, make_edge):
    urls = [f"https://127.0.0.1:{testbed.free_port()}" for _ in range(2)]
    edge = make_edge(ho, ho_url=",".join(urls), retries=1)
    result = edge.cli("pull", "--mode", "full")
    assert result.returncode != 0
    assert "cannot reach HO API at any of its 2 URLs" in result.stderr
    for url in urls:
        assert f"{url}: ConnectionRefusedError" in result.stderr
    assert "after 2 tries" in result.stderr


BASE = {"PHOTO_SYNC_EDGE_DATABASE_URL": "postgresql:///x",
        "PHOTO_SYNC_EDGE_STORE_ID": "00000000-0000-4000-8000-000000000001",
        "PHOTO_SYNC_EDGE_STORE_SECRET": "s" * 32}


def test_ho_url_takes_a_comma_separated_list():
    settings = EdgeSettings.load(environ={
        **BASE, "PHOTO_SYNC_EDGE_HO_URL": "https://gw1.example:8443/, https://gw2.example:8443"})
    assert settings.ho_url == "https://gw1.example:8443,https://gw2.example:8443"


@pytest.mark.parametrize(("value", "words"), [
    ("https://gw1.example,", "has an empty entry"),
    ("https://gw1.example,gw2.example", "'gw2.example' must start with http:// or https://"),
    # Every gateway is held to the TLS rule, not only the first.
    ("https://gw1.example,http://gw2.example", "uses http:// to a host that is not this machine"),
])
def test_ho_url_list_refuses_a_bad_entry(value, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        EdgeSettings.load(environ={**BASE, "PHOTO_SYNC_EDGE_HO_URL": value})
