"""S3 on several servers: a SeaweedFS volume server dies mid-sync.

The photo bucket lives on a SeaweedFS cluster (tests/support/cluster.py's
SeaweedCluster: a master, three volume servers, a filer with the S3 gateway) that
writes every volume twice (replication 001). Two stores pull at once, slowed so that
they are mid-run when the volume server holding the most data is SIGKILLed. Every
photo still has a copy, so both stores finish byte-identical to HO with their reports
recorded.

With replication 000 (one copy) the same test fails: the photos on the dead server
are gone, the stores' downloads of them fail.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import BIN, assert_edge_matches_ho, assert_no_bad_bytes, ho_live_photos
from support import testbed
from support.cluster import SeaweedCluster
from test_edge_faults import SMALL, synced_count, wait_until
from test_ho_failover import COUNT, SLOW, start_ho

pytestmark = pytest.mark.slow  # ~40 s: four weed processes, two slowed pulls


@pytest.fixture(scope="module")
def s3_cluster(bed_root):
    cluster = SeaweedCluster(bed_root / "s3-cluster", volumes=3, replication="001").start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def ho(pg, s3_cluster, bed_root, photo_factory):
    env = testbed.ho_environment(pg.create_db("ho_s3_cluster"), s3_cluster,
                                 bucket="photos-cluster")
    stack = start_ho("s3cluster", env, bed_root / "ho_s3_cluster",
                     photo_factory(COUNT, seed=43, **SMALL))
    yield stack
    stack.server.stop()


def test_stores_finish_when_a_volume_server_dies(ho, s3_cluster, make_edge):
    edges = [make_edge(ho, **SLOW) for _ in range(2)]
    live = ho_live_photos(ho)
    assert len(live) == COUNT
    pulls = [subprocess.Popen([str(BIN / "photo-sync-edge"), "pull", "--mode", "full",
                               "--json"], env={**os.environ, **edge.env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for edge in edges]
    try:
        for edge, pull in zip(edges, pulls):
            wait_until(lambda edge=edge: synced_count(edge) >= 5, 60, "the pulls to be mid-run",
                       pull)
        victim = s3_cluster.busiest_volume_server()
        s3_cluster.kill(victim)
        assert all(pull.poll() is None for pull in pulls), "a pull ended before the kill"
        outputs = [pull.communicate(timeout=180) for pull in pulls]
    finally:
        for pull in pulls:
            if pull.poll() is None:
                pull.kill()
                pull.communicate()

    for edge, pull, (out, err) in zip(edges, pulls, outputs):
        assert_no_bad_bytes(edge)
        if pull.returncode != 0:
            # The agent's retries ran out: the next scheduled run finishes.
            result, _ = edge.pull("incremental")
            assert result.returncode == 0, (out, err, result.stdout, result.stderr)
        assert_edge_matches_ho(edge, ho)
        with ho.catalog() as conn:
            rows = conn.execute("SELECT photo_id::text AS id, status FROM photo_sync_status "
                                "WHERE store_id = %s", (edge.store_id,)).fetchall()
        assert {r["id"]: r["status"] for r in rows} == dict.fromkeys(live, "synced")
