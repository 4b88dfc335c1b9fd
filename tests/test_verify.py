"""`photo-sync-edge verify`: a synced store damaged in SQL is named photo by photo, without a
byte downloaded; `--repair` and an ordinary incremental pull heal it; a full pull removes
the extra under its delete guard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import assert_edge_matches_ho

def verify_cli(edge, *args: str, extra_env: dict | None = None):
    """`photo-sync-edge verify ARGS` as a process, against the edge's settings."""
    return subprocess.run([str(Path(sys.executable).parent / "photo-sync-edge"), "verify", *args],
                          env={**os.environ, **edge.env, **(extra_env or {})},
                          capture_output=True, text=True, timeout=300)


def verify_json(edge, *args: str) -> tuple[int, dict]:
    result = verify_cli(edge, "--json", *args)
    assert result.stdout.strip().startswith("{"), result.stderr
    return result.returncode, json.loads(result.stdout)


def downloads_served(ho) -> int:
    """Download requests HO's gunicorn has logged so far."""
    return ho.server.log_path.read_text().count("/download/")


@pytest.fixture(scope="module")
def ho(ho_stack, photo_factory):
    stack = ho_stack("verify")
    stack.import_dir(photo_factory(16, seed=21, min_kb=5, max_kb=30, mean_kb=12))
    return stack


def test_a_synced_store_matches(ho, make_edge, tmp_path):
    edge = make_edge(ho, metrics_file=str(tmp_path / "photo_sync.prom"))
    assert edge.pull("full")[0].returncode == 0
    before = downloads_served(ho)
    code, report = verify_json(edge)
    assert code == 0, report
    assert report["matches"] is True
    assert report["listed"] == report["held"] == 16
    assert report["counts"] == {"missing": 0, "extra": 0, "stale": 0, "corrupt": 0}
    assert downloads_served(ho) == before, "verify must not download photo bytes"
    text = (tmp_path / "photo_sync_verify.prom").read_text()
    assert 'photo_sync_verify_photos{kind="corrupt"} 0' in text
    table = verify_cli(edge)
    assert table.returncode == 0 and "store matches HO: HO lists 16 photos" in table.stdout


def test_drift_is_named_repaired_by_a_pull_and_extras_go_with_a_full_pull(ho, make_edge):
    edge = make_edge(ho)
    assert edge.pull("full")[0].returncode == 0
    ids = sorted(edge.photos())
    missing, stale, corrupt = ids[0], ids[1], ids[2]
    extra = str(uuid.uuid4())
    good_bytes = {i: edge.photos()[i][3] for i in (stale, corrupt)}
    with edge.db() as conn:
        conn.execute("DELETE FROM product_photo WHERE id = %s", (missing,))
        conn.execute("UPDATE product_photo SET version = version + 1 WHERE id = %s", (stale,))
        conn.execute("UPDATE product_photo SET image_binary = 'not a jpeg'::bytea WHERE id = %s",
                     (corrupt,))
        conn.execute("INSERT INTO product_photo (id, product_id, object_key, filename, size, "
                     "content_type, checksum, version, image_binary, sync_status) VALUES "
                     "(%s, %s, 'x/extra.jpg', 'extra.jpg', 3, 'image/jpeg', md5('abc'), 1, "
                     "'abc'::bytea, 'synced')", (extra, str(uuid.uuid4())))

    before = downloads_served(ho)
    code, report = verify_json(edge)
    assert code == 1
    assert report["matches"] is False
    assert (report["missing"], report["stale"], report["corrupt"], report["extra"]) == (
        [missing], [stale], [corrupt], [extra])
    assert report["counts"] == {"missing": 1, "extra": 1, "stale": 1, "corrupt": 1}
    assert downloads_served(ho) == before, "verify must not download photo bytes"
    table = verify_cli(edge)
    assert table.returncode == 1
    assert "differs from HO" in table.stdout and corrupt in table.stdout

    code, report = verify_json(edge, "--repair")
    assert code == 1 and report["repaired"] == 3
    # Repair marks; it neither deletes nor touches bytes.
    held = edge.photos()
    assert held[extra][3] == b"abc"
    assert held[stale][3] == good_bytes[stale] and held[stale][2] == "pending"
    assert held[corrupt][3] == b"not a jpeg" and held[corrupt][2] == "pending"

    result, summary = edge.pull("incremental")
    assert result.returncode == 0, result.stderr
    # The stale row's bytes still match HO's checksum: only its metadata is rewritten.
    assert (summary["downloaded"], summary["updated"], summary["failed"]) == (2, 1, 0)
    code, report = verify_json(edge)
    assert code == 1 and report["extra"] == [extra]
    assert report["counts"] == {"missing": 0, "extra": 1, "stale": 0, "corrupt": 0}
    # HO heard the repaired photos reported synced again.
    with ho.catalog() as conn:
        statuses = {str(r["photo_id"]): r["status"] for r in conn.execute(
            "SELECT photo_id, status FROM photo_sync_status WHERE store_id = %s",
            (edge.store_id,))}
    assert {statuses[i] for i in (missing, stale, corrupt)} == {"synced"}

    result, summary = edge.pull("full")
    assert result.returncode == 0 and summary["deleted"] == 1
    code, report = verify_json(edge)
    assert code == 0 and report["matches"] is True
    assert_edge_matches_ho(edge, ho)


def test_repair_alone_heals_nothing_it_cannot_replace(ho, make_edge):
    """A photo HO deleted since the store synced is extra; --repair leaves it for the full
    pull, whose guard refuses to delete more than MAX_DELETE_FRACTION of the store."""
    edge = make_edge(ho, max_delete_fraction="0.0")
    assert edge.pull("full")[0].returncode == 0
    extra = str(uuid.uuid4())
    with edge.db() as conn:
        conn.execute("INSERT INTO product_photo (id, product_id, image_binary, sync_status) "
                     "VALUES (%s, %s, 'abc'::bytea, 'synced')", (extra, str(uuid.uuid4())))
    code, report = verify_json(edge, "--repair")
    assert code == 1 and report["repaired"] == 0 and report["extra"] == [extra]
    result, summary = edge.pull("full")
    assert result.returncode == 1 and summary["status"] == "refused"
    assert extra in edge.photos(), "the guard kept the extra photo"


@pytest.mark.parametrize("env, code, message", [
    ({"PHOTO_SYNC_EDGE_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}, 2,
     "cannot use the database"),
    ({"PHOTO_SYNC_EDGE_HO_URL": "http://127.0.0.1:9", "PHOTO_SYNC_EDGE_RETRIES": "0"}, 4,
     "cannot reach HO API"),
    ({"PHOTO_SYNC_EDGE_STORE_SECRET": "wrong-secret"}, 4, "refused the credentials"),
], ids=["db-down", "ho-down", "bad-secret"])
def test_failures_exit_with_the_agents_codes(ho, make_edge, env, code, message):
    edge = make_edge(ho)
    result = verify_cli(edge, extra_env=env)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_schema_missing_says_what_to_run(ho, make_edge):
    edge = make_edge(ho, schema=False)
    result = verify_cli(edge)
    assert result.returncode == 2 and "schema apply" in result.stderr


def test_repair_waits_for_no_running_pull(ho, make_edge):
    """--repair writes the retry queue a running pull reads: it takes the run lock."""
    edge = make_edge(ho)
    assert edge.pull("full")[0].returncode == 0
    with edge.db() as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('photo_sync_edge_run'))")
        result = verify_cli(edge, "--repair")
        assert result.returncode == 3, result.stderr
        assert "another photo-sync run is in progress" in result.stderr
        # A read-only verify does not need the lock.
        assert verify_cli(edge).returncode == 0
