"""The fleet benchmark's harness (bench/fleet.py) on a tiny fleet: every scenario runs, every
store is checked against HO's catalog byte for byte, and a store that did not sync shows as
incomplete instead of passing. No timing assertions: the figures are the bench's business."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ho_live_photos

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `bench` is a package at the repository root

from bench import fleet, report  # noqa: E402

TINY = ["--photos", "4", "--min-kb", "5", "--max-kb", "30", "--mean-kb", "12",
        "--window", "1", "--throttle-bytes", "200000"]


def _run(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.fleet", *TINY, "--out", str(out),
                           *args], capture_output=True, text=True, timeout=600, cwd=REPO)


def test_fleet_run_has_every_scenario_each_store_checked(tmp_path):
    results_md = (BENCH / "RESULTS.md").read_text()
    run = _run(tmp_path, "--stores", "3")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # A run outside bench/results leaves the committed page alone.
    assert (BENCH / "RESULTS.md").read_text() == results_md
    text = (tmp_path / "fleet-3.json").read_text()
    result = json.loads(text)
    assert result["kind"] == "fleet" and result["stores"] == 3
    # Compact: each store's figures on one line (13 stores over the 5 scenarios), so a
    # committed 200-store file stays reviewable.
    rows = [line for line in text.splitlines() if line.lstrip().startswith('{"store": ')]
    assert len(rows) == 1 + 4 * 3
    assert all(json.loads(row.rstrip().rstrip(","))["check"] for row in rows)
    # As the roles deploy HO: the agents went through the gateway, and nginx, not gunicorn,
    # served every photo through its signed link (the API logged no download at all).
    assert result["ho_server"]["front_door"] == "gateway"
    assert result["ho_server"]["downloads"] == "signed"
    assert result["commands"]["register"].startswith("photo-sync-ho store set-many")
    s = result["scenarios"]
    assert list(s) == list(fleet.SCENARIOS)
    assert s["single_full"]["stores"] == 1
    for name, sc in s.items():
        stores = 1 if name == "single_full" else 3
        assert sc["complete"] and sc["stores_complete"] == stores, (name, sc["incomplete"])
        assert sc["checked"]["stores"] == stores and sc["checked"]["photos_at_ho"] == 4
        assert len(sc["agents"]) == stores
        for agent in sc["agents"]:
            assert agent["rc"] == 0 and agent["status"] == "ok", agent
            assert agent["check"] == {"complete": True, "reasons": [], "photos": 4}
        assert sc["seconds_to_complete"] >= max(a["seconds"] for a in sc["agents"])
        assert sc["access_log"]["http_5xx"] == 0
        assert sc["ho_peak_rss_mb"] > 0 and sc["cpu_seconds"]["ho_api"] > 0
        assert "gateway" in sc["cpu_seconds"]  # nginx's share, counted in every scenario
        assert sc["cpu_seconds"]["ho"] == round(sc["cpu_seconds"]["ho_api"]
                                                + sc["cpu_seconds"]["gateway"], 2)
    # What each scenario moved, as the agents' own summaries count it.
    assert all(a["downloaded"] == 4 for a in s["full"]["agents"])
    assert all(a["downloaded"] == 4 for a in s["full_throttled"]["agents"])
    assert all(a["downloaded"] + a["updated"] == 1 for a in s["incremental_1pct"]["agents"])
    assert all(a["downloaded"] == 0 for a in s["resync_nochange"]["agents"])
    assert s["resync_nochange"]["access_log"]["download"]["count"] == 0
    # Latency comes from the gateway's access log: every download and list page the stores made.
    assert s["full"]["access_log"]["download"]["count"] >= 12
    assert sum(sc["cpu_seconds"]["gateway"] for sc in s.values()) > 0
    assert sum(a["bytes"] for a in s["full"]["agents"]) == 3 * result["photo_set"]["bytes_total"]
    assert s["full"]["api_downloads"] == {"count": 0, "body_bytes": 0}
    assert s["full"]["access_log"]["list"]["p99_ms"] is not None
    assert [a["throttled"] for a in s["full_throttled"]["agents"]].count(True) == 1
    goals = result["goals"]
    assert goals == report.fleet_goals(result)
    assert all(g["met"] in (True, False) for g in goals)
    # The goals are judged from the figures: a slow store or one 5xx turns them to "no".
    worse = json.loads(json.dumps(result))
    worse["scenarios"]["full"]["store_seconds_unthrottled"]["slowest_vs_median"] = 5.0
    worse["scenarios"]["full"]["access_log"]["http_5xx"] = 1
    judged = {g["what"]: g["met"] for g in report.fleet_goals(worse)}
    assert judged["slowest store vs median, full"] is False
    assert judged["5xx answers from HO, every scenario"] is False
    page = report.fleet_table(result)
    assert "| full: first full sync of the whole fleet, empty databases | 3 | yes |" in page
    # Secrets stay out of the results: no store's secret is written, only setting names.
    text = (tmp_path / "fleet-3.json").read_text()
    assert '"secret"' not in text and "STORE_SECRET=" not in text


def test_a_store_that_cannot_sync_is_incomplete_not_passed(tmp_path):
    # One store configured with a wrong secret: HO refuses it, its database stays empty.
    # Straight at gunicorn (--front-door direct): its access log counts the 401.
    run = _run(tmp_path, "--stores", "2", "--wrong-secret", "1", "--scenarios", "full",
               "--front-door", "direct")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert "incomplete" in run.stderr
    sc = json.loads((tmp_path / "fleet-2.json").read_text())["scenarios"]["full"]
    assert not sc["complete"] and sc["seconds_to_complete"] is None
    assert sc["incomplete"] == [{"store": 0, "reasons": ["4 missing"]}]
    bad, good = sorted(sc["agents"], key=lambda a: a["store"])
    assert bad["wrong_secret"] and bad["rc"] == 4 and "refused" in bad["error"]
    assert good["check"]["complete"]
    assert sc["access_log"]["by_status"].get("401", 0) >= 1
    assert "gateway" not in sc["cpu_seconds"]
    page = report.fleet_table(json.loads((tmp_path / "fleet-2.json").read_text()))
    assert "**no** (1 incomplete)" in page


@pytest.fixture(scope="module")
def ho(ho_stack, photo_factory):
    stack = ho_stack("fleetcheck")
    stack.import_dir(photo_factory(3, seed=11, min_kb=5, max_kb=20, mean_kb=10))
    return stack


def test_check_store_sees_bad_bytes_stale_rows_and_missing_photos(ho, make_edge):
    edge = make_edge(ho)
    result, _ = edge.pull("full")
    assert result.returncode == 0, result.stderr
    live = ho_live_photos(ho)
    assert fleet.check_store(edge.database_url, live) == {"complete": True, "reasons": [],
                                                          "photos": 3}
    first, second, third = sorted(live)
    with edge.db() as conn:
        # Same length, one byte different: only the md5 of the bytes can tell.
        conn.execute("UPDATE product_photo SET image_binary = "
                     "overlay(image_binary placing '\\x00'::bytea from 3) WHERE id = %s",
                     (first,))
        conn.execute("UPDATE product_photo SET version = version - 1 WHERE id = %s", (second,))
        conn.execute("DELETE FROM product_photo WHERE id = %s", (third,))
    check = fleet.check_store(edge.database_url, live)
    assert not check["complete"]
    assert sorted(check["reasons"]) == ["1 bytes not matching the checksum", "1 missing",
                                        "1 stale version or checksum"]


def test_access_log_stats_count_429_5xx_and_percentiles():
    lines = ['127.0.0.1 "GET /api/v1/sync/product-photos/?store_id=x&limit=500 HTTP/1.1" '
             f'200 900 {ms}ms' for ms in range(1, 101)]
    lines += ['127.0.0.1 "GET /api/v1/sync/product-photos/abc/download/?store_id=x HTTP/1.1" '
              '429 50 2ms',
              '127.0.0.1 "POST /api/v1/sync/product-photos/status/ HTTP/1.1" 503 50 3ms',
              '[2026-12-02 07:00:00 +0000] [12] [INFO] Booting worker with pid: 12']
    stats = fleet.access_stats(lines)
    assert stats["requests"] == 102 and stats["http_429"] == 1 and stats["http_5xx"] == 1
    assert stats["list"] == {"count": 100, "p50_ms": 50, "p99_ms": 99}
    assert stats["download"]["count"] == 1 and stats["counts"]["status"] == 1
