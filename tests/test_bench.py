"""The benchmark code itself, on a tiny set: the loaders write the right bytes, and the
harness's result JSON carries every measurement. No timing assertions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_edge_matches_ho

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import baseline  # noqa: E402
import practical  # noqa: E402


@pytest.fixture(scope="module")
def ho(ho_stack, photo_factory):
    stack = ho_stack("bench")
    stack.import_dir(photo_factory(7, seed=5, min_kb=5, max_kb=40, mean_kb=15))
    return stack


def test_baseline_loader_writes_every_photo_with_the_right_bytes(ho, make_edge):
    edge = make_edge(ho)
    result = baseline.run_baseline(ho.url, edge.store_id, edge.secret, edge.database_url,
                                   delay=0)
    assert (result["synced"], result["failed"]) == (7, 0)
    assert_edge_matches_ho(edge, ho)
    # It reported what it did back to HO, as the original plan says.
    with ho.catalog() as conn:
        reported = conn.execute("SELECT count(*) AS n FROM photo_sync_status WHERE store_id = %s "
                                "AND status = 'synced'", (edge.store_id,)).fetchone()["n"]
    assert reported == 7


def test_baseline_loader_stops_at_its_limit(ho, make_edge):
    edge = make_edge(ho)
    result = baseline.run_baseline(ho.url, edge.store_id, edge.secret, edge.database_url,
                                   delay=0, limit_photos=3)
    assert result["synced"] == 3 and len(edge.photos()) == 3


def test_practical_loader_copies_every_photo_with_the_right_bytes(ho, make_edge, s3):
    edge = make_edge(ho)
    result = practical.run_practical(
        ho.database_url, s3.endpoint, s3.access_key, s3.secret_key,
        ho.env["PHOTO_SYNC_HO_S3_BUCKET"], edge.database_url, threads=3)
    assert result["synced"] == 7
    assert_edge_matches_ho(edge, ho)


@pytest.mark.skipif(not (shutil.which("rclone") and shutil.which("wrk")),
                    reason="rclone and wrk are not installed (make bench installs them)")
def test_harness_result_has_every_measurement(tmp_path):
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--photos", "4", "--large-photos", "8",
         "--reps", "1", "--baseline-photos", "2", "--wrk-seconds", "1", "--out", str(out),
         "--no-results-md", "--no-install"],
        capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((out / "photos-4.json").read_text())
    m = result["measurements"]
    assert set(m) == {"full_sync", "full_sync_presigned", "incremental_nochange", "rclone",
                      "practical", "baseline",
                      "wrk", "incremental_1pct", "full_sync_large", "incremental_nochange_large"}
    for name, series in m.items():
        if name != "wrk":
            assert series["median_seconds"] > 0 and series["runs"], name
            assert series["peak_rss_mb"] > 0, name
    assert m["full_sync"]["runs"][0]["summary"]["downloaded"] == 4
    assert m["incremental_nochange"]["runs"][0]["summary"]["downloaded"] == 0
    assert m["incremental_1pct"]["runs"][0]["summary"]["downloaded"] == 1
    assert m["full_sync_large"]["runs"][0]["summary"]["downloaded"] == 8
    assert m["rclone"]["runs"][0]["files"] == 4
    assert m["practical"]["runs"][0]["synced"] == 4
    assert m["baseline"]["photos_measured"] == 2 and m["baseline"]["scaled_seconds"] > 0
    for name in ("list", "download_api", "download_s3"):
        assert m["wrk"][name]["requests"] > 0 and m["wrk"][name]["errors"]["status"] == 0
    assert len(result["targets"]) == 10 and all("met" in t for t in result["targets"])
    assert {"full_vs_rclone", "baseline_vs_full", "incr_vs_full", "incr_large_vs_small",
            "s3_vs_api_download"} <= set(result["ratios"])
    assert result["machine"]["cores"] and result["commands"]["pull_full"]
    assert "rclone copy --transfers 8" in result["commands"]["rclone"]
    assert (out / "photos-4.png").exists()
