"""`photo-sync-ho fleet`: two stores that synced differently (and one that never ran), as
HO sees them from their status reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from minio import Minio

def fleet_cli(ho, *args: str, env: dict | None = None):
    """`photo-sync-ho fleet ARGS` as a process, with the HO stack's settings."""
    return subprocess.run([str(Path(sys.executable).parent / "photo-sync-ho"), "fleet", *args],
                          env={**os.environ, **ho.env, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def fleet_json(ho, *args: str) -> dict:
    result = fleet_cli(ho, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def fleet(ho_stack, photo_factory, make_edge, s3):
    """HO with 6 photos; store A synced all; store B synced after one photo's bytes vanished
    from S3 (that photo failed) and then went quiet for two days; store C never ran. Then
    one photo got a new version at HO, which neither store has pulled."""
    ho = ho_stack("fleet")
    ho.import_dir(photo_factory(6, seed=41, min_kb=5, max_kb=20, mean_kb=10))
    with ho.catalog() as conn:
        photos = conn.execute("SELECT id::text AS id, object_key FROM product_photo "
                              "ORDER BY id").fetchall()
    broken, bumped = photos[0], photos[1]
    a, b, c = make_edge(ho), make_edge(ho), make_edge(ho)
    result, summary = a.pull("full")
    assert result.returncode == 0 and summary["reported"] == 6
    Minio(s3.endpoint, s3.access_key, s3.secret_key, secure=False, region="us-east-1"
          ).remove_object(ho.env["PHOTO_SYNC_HO_S3_BUCKET"], broken["object_key"])
    result, summary = b.pull("full")
    assert result.returncode == 1 and summary["failed"] == 1 and summary["reported"] == 6
    with ho.catalog() as conn:
        conn.execute("UPDATE product_photo SET version = version + 1 WHERE id = %s",
                     (bumped["id"],))
        # Back-date store B's reports and the broken photo's last change by two days
        # (the replica role skips the trigger that stamps updated_at).
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE product_photo SET updated_at = now() - interval '48 hours' "
                     "WHERE id = %s", (broken["id"],))
        conn.execute("UPDATE photo_sync_status SET reported_at = now() - interval '48 hours' "
                     "WHERE store_id = %s", (b.store_id,))
    return ho, a, b, c, broken["id"]


def test_each_store_against_the_catalog(fleet):
    ho, a, b, c, broken = fleet
    view = fleet_json(ho)
    assert view["catalog_photos"] == 6
    stores = {s["store_id"]: s for s in view["stores"]}
    assert set(stores) == {a.store_id, b.store_id, c.store_id}
    sa, sb, sc = stores[a.store_id], stores[b.store_id], stores[c.store_id]
    # A: everything synced but the photo HO bumped since.
    assert (sa["synced"], sa["failed"], sa["pending"]) == (5, 0, 1)
    assert 0 < sa["lag_seconds"] < 3600 and sa["last_error"] is None
    assert sa["silent"] is False
    # B: the photo whose bytes vanished failed, the bumped one is pending, and its
    # oldest unsynced change is two days old.
    assert (sb["synced"], sb["failed"], sb["pending"]) == (4, 1, 1)
    assert 47 * 3600 < sb["lag_seconds"] < 49 * 3600
    assert sb["last_error"]["photo_id"] == broken and "object_missing" in sb["last_error"]["error"]
    # C never reported anything.
    assert (sc["synced"], sc["failed"], sc["pending"], sc["last_report_at"]) == (0, 0, 6, None)
    assert sorted(view["silent"]) == sorted([b.store_id, c.store_id])


def test_stale_after_sets_what_silent_means(fleet):
    ho, a, b, c, _ = fleet
    assert fleet_json(ho, "--stale-after", "72")["silent"] == [c.store_id]
    assert sorted(fleet_json(ho, "--stale-after", "0.5")["silent"]) == sorted(
        [b.store_id, c.store_id])


def test_table_for_the_operator(fleet):
    ho, a, b, c, _ = fleet
    result = fleet_cli(ho)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "catalog: 6 live photos"
    line_b = next(line for line in lines if line.startswith(b.store_id))
    assert "object_missing" in line_b and "2.0d" in line_b
    assert lines[-1].startswith("silent for over 24h while behind: ")
    assert b.store_id in lines[-1] and c.store_id in lines[-1] and a.store_id not in lines[-1]


@pytest.mark.parametrize("env, message", [
    ({"PHOTO_SYNC_HO_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"},
     "check PHOTO_SYNC_HO_DATABASE_URL"),
    ({"PHOTO_SYNC_HO_DATABASE_URL": ""}, "PHOTO_SYNC_HO_DATABASE_URL is not set"),
], ids=["db-down", "unset"])
def test_bad_catalog_settings_exit_2(fleet, env, message):
    result = fleet_cli(fleet[0], env=env)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_catalog_without_tables_says_to_run_init_db(fleet, pg):
    url = pg.create_db("fleet_empty_catalog")
    result = fleet_cli(fleet[0], env={"PHOTO_SYNC_HO_DATABASE_URL": url})
    assert result.returncode == 2 and "photo-sync-ho init-db" in result.stderr
