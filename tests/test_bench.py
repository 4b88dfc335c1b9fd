"""The benchmark code itself, on a tiny set: the loaders write the right bytes, the harness's
result JSON carries every measurement on one boundary (the whole process), and RESULTS.md is
exactly what bench/report.py makes of the committed JSON. No timing assertions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_edge_matches_ho

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `bench` is a package at the repository root

from bench import baseline, practical, report  # noqa: E402


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


def _keys(value) -> set[str]:
    """Every key anywhere in a JSON document."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


# No skip when rclone or wrk is missing: scripts/bootstrap.sh installs them, and a missing
# peer makes run.py stop with that advice, which this test then shows.
def test_harness_result_has_every_measurement_on_the_process_boundary(tmp_path):
    results_md = (BENCH / "RESULTS.md").read_text()
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--photos", "3", "4", "--large-photos", "8",
         "--reps", "1", "--baseline-photos", "2", "--wrk-seconds", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # A run outside bench/results leaves the committed page alone.
    assert (BENCH / "RESULTS.md").read_text() == results_md
    result = json.loads((out / "photos-4.json").read_text())
    # Both sizes come from this one invocation, and the page says so for each.
    smaller = json.loads((out / "photos-3.json").read_text())
    assert smaller["photos"] == 3 and smaller["invocation"] == result["invocation"]
    assert result["invocation"]["sizes"] == [3, 4]
    assert result["invocation"]["command"].startswith("python -m bench.run --photos 3 4 ")
    assert "OUT_DIR" in result["invocation"]["command"] and str(out) not in json.dumps(result)
    assert result["schema"] == report.SCHEMA and result["statistic"] == "median"
    assert result["boundary"].startswith("whole process")
    # One boundary: nothing timed from inside a process reaches the results.
    assert not {"inner_seconds", "duration", "duration_us"} & _keys(result)
    m = result["measurements"]
    assert set(m) == {"full_sync", "full_sync_presigned", "incremental_nochange", "rclone",
                      "practical", "baseline", "cli_startup",
                      "wrk", "incremental_1pct", "full_sync_large", "incremental_nochange_large"}
    for name, series in m.items():
        if name != "wrk":
            assert series["median_seconds"] > 0 and series["run_count"] == len(series["runs"])
            assert series["peak_rss_mb"] > 0, name
    assert m["incremental_nochange"]["run_count"] == 3
    assert m["cli_startup"]["run_count"] == 3 and result["commands"]["cli_startup"]
    assert m["full_sync"]["runs"][0]["summary"]["downloaded"] == 4
    # The plain series goes through the API; the presigned one takes every byte from S3.
    assert m["full_sync"]["runs"][0]["api_downloads"] >= 4
    assert m["full_sync_presigned"]["runs"][0]["summary"]["downloaded"] == 4
    assert m["full_sync_presigned"]["runs"][0]["api_downloads"] == 0
    assert "PHOTO_SYNC_EDGE_PRESIGNED_ORIGIN" in result["commands"]["pull_full_presigned"]
    assert m["incremental_nochange"]["runs"][0]["summary"]["downloaded"] == 0
    assert m["incremental_1pct"]["runs"][0]["summary"]["downloaded"] == 1
    assert m["full_sync_large"]["runs"][0]["summary"]["downloaded"] == 8
    assert m["rclone"]["runs"][0]["files"] == 4
    assert m["practical"]["runs"][0]["synced"] == 4
    # The original plan's per-photo time is its whole process's time over its photos.
    b = m["baseline"]
    assert b["photos_measured"] == 2 and b["runs"][0]["synced"] == 2
    assert abs(b["per_photo_seconds"] * 2 - b["runs"][0]["seconds"]) < 1e-4
    assert b["scaled_seconds"] == round(b["per_photo_seconds"] * 4, 2)
    assert "--delay" in result["commands"]["baseline"]
    for name in ("list", "download_api", "download_s3"):
        w = m["wrk"][name]
        assert w["requests"] > 0 and w["errors"]["status"] == 0
        assert w["req_per_s"] == round(w["requests"] / w["seconds"], 1)
    ratios, targets = report.evaluate(result)
    assert result["targets"] == targets and len(targets) == 10
    assert all(t["value"] is not None and t["met"] in (True, False) for t in targets)
    assert {"full_vs_rclone", "baseline_vs_full", "incr_vs_full", "incr_large_vs_small",
            "s3_vs_api_download"} <= set(result["ratios"])
    assert result["machine"]["cores"] and result["commands"]["pull_full"]
    assert "rclone copy --transfers 8" in result["commands"]["rclone"]
    assert (out / "photos-4.png").exists()
    page = report.render(out)
    assert report.NOT_RECORDED not in page
    assert "| incremental, nothing changed (4 photos) | 3 |" in page
    assert "One invocation measured 3, 4 photos: `python -m bench.run --photos 3 4 " in page
    assert "| the floor under it: CLI start-up and imports (`photo-sync-edge --help`) | 3 |" in page


def test_results_md_is_exactly_what_the_committed_json_makes():
    # RESULTS.md is generated: prose and table cannot contradict each other or the JSON.
    assert list(RESULTS.glob("photos-*.json")), "no committed results"
    assert (BENCH / "RESULTS.md").read_text() == report.render(RESULTS), (
        "bench/RESULTS.md is not what bench/report.py makes of bench/results/*.json: "
        "run `python -m bench.report` (never edit RESULTS.md by hand)")
    # ...and that includes the verify/serve section of the committed verify-serve.json.
    ops = json.loads((RESULTS / "verify-serve.json").read_text())
    assert report.ops_table(ops) in (BENCH / "RESULTS.md").read_text()


def test_results_md_check_mode_agrees():
    run = subprocess.run([sys.executable, "-m", "bench.report", "--check"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("text", [report.HEADER, report._SCHEMA1_NOTE])
def test_fixed_text_makes_no_numeric_claim(text):
    # Every number on the page comes from the JSON; the fixed words only explain.
    words = re.sub(r"\bS3\b|\bMD5\b|results schema 1\b", "", text)
    assert not re.findall(r"\d", words), re.findall(r".{20}\d.{20}", words)


def test_every_row_says_how_many_runs_its_median_is_of():
    for results in report.load_results(RESULTS):
        m, n = results["measurements"], results["photos"]
        section = report.table(results)
        assert "| runs | time (s), median |" in section
        runs = {line.split(" | ")[0][2:]: line.split(" | ")[1]
                for line in section.splitlines() if line.startswith("| ")}
        expected = {
            "photo-sync full sync (`pull --mode full`)": m["full_sync"],
            "rclone copy (S3 -> local disk)": m["rclone"],
            f"incremental, nothing changed ({n} photos)": m["incremental_nochange"],
            f"original plan scaled to {n} photos (median time per photo x {n})": m["baseline"],
        }
        for name, series in expected.items():
            assert runs[name] == str(len(series["runs"])), name
        assert runs["API download (cycling all photo ids)"] == "1"


def test_a_time_taken_inside_a_process_is_never_shown():
    results = json.loads(next(RESULTS.glob("photos-*.json")).read_text())
    old = {**results, "schema": 1}
    practical_seconds = old["measurements"]["practical"]["median_seconds"]
    rows = {line.split(" | ")[0]: line for line in report.table(old).splitlines()}
    practical_row = rows["| practical limit: parallel S3 GETs + binary COPY, no API"]
    assert f"| {report.NOT_RECORDED} |" in practical_row
    assert f"| {report._s(practical_seconds)} |" not in practical_row
    baseline_row = next(v for k, v in rows.items() if "photos measured" in k)
    assert f"| {report.NOT_RECORDED} |" in baseline_row
    ratios, targets = report.evaluate(old)
    assert ratios["full_vs_practical"] is None and ratios["s3_vs_api_download"] is None
    assert next(t for t in targets if "wrk" in t["what"])["met"] is None
    # The same figures on the one boundary (schema 2) are shown.
    new = {**results, "schema": report.SCHEMA}
    assert report.evaluate(new)[0]["full_vs_practical"] is not None


@pytest.mark.parametrize("text", [report.GATEWAY_HEADER, report.ROLLOUT_HEADER,
                                  report.OPS_HEADER])
def test_gateway_and_rollout_fixed_text_makes_no_numeric_claim(text):
    words = re.sub(r"\bS3\b", "", text)
    assert not re.findall(r"\d", words), re.findall(r".{20}\d.{20}", words)


def test_results_md_shows_the_gateway_and_rollout_scale_results():
    # Fails if either section is dropped from the page or loses a measured path.
    page = (BENCH / "RESULTS.md").read_text()
    gateway = json.loads((RESULTS / "gateway.json").read_text())
    rollout = json.loads((RESULTS / "rollout-scale.json").read_text())
    assert report.GATEWAY_HEADER in page and report.gateway_table(gateway) in page
    assert report.ROLLOUT_HEADER in page and report.rollout_table(rollout) in page
    rows = {line.split(" | ")[0][2:]: line for line in report.gateway_table(gateway).splitlines()
            if line.startswith("| ")}
    for key, name in report._WRK_PATHS:
        w = gateway["measurements"]["wrk"][key]
        assert f"| {w['mb_per_s']} |" in rows[name] and f"| {w['req_per_s']} |" in rows[name]
        if "api_cpu_s_per_gb" in w:
            assert f"| {w['api_cpu_s_per_gb']} |" in rows[name]
    for key, name in report._SYNC_SERIES:
        assert f"| {report._s(gateway['measurements'][key]['median_seconds'])} |" in rows[name]
    for key, target in gateway["targets"].items():
        assert f"| {target['value']} | {target['goal']} |" in rows[report._GATEWAY_TARGETS[key]]
    for name, command in gateway["commands"].items():
        assert f"- {name}: `{command}`" in page
    assert gateway["started_at"][:19] in page
    for run in rollout["runs"]:
        assert f"| {run['stores']} | {run['waves']} | {run['seconds']} |" in page
    assert rollout["note"] in page and rollout["command"] in page


def test_a_changed_gateway_or_rollout_figure_changes_results_md(tmp_path):
    # Copy the committed results, change one figure in each new file, and render again.
    for path in RESULTS.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    before = report.render(tmp_path)
    assert before == (BENCH / "RESULTS.md").read_text()
    gateway = json.loads((tmp_path / "gateway.json").read_text())
    gateway["measurements"]["wrk"]["download_gateway"]["api_cpu_s_per_gb"] = 4321.5
    gateway["measurements"]["wrk"]["download_presigned"]["mb_per_s"] = 1234.56
    (tmp_path / "gateway.json").write_text(json.dumps(gateway))
    rollout = json.loads((tmp_path / "rollout-scale.json").read_text())
    rollout["runs"][0]["seconds"] = 9876.5
    (tmp_path / "rollout-scale.json").write_text(json.dumps(rollout))
    after = report.render(tmp_path)
    assert after != before
    assert "| 4321.5 |" in after and "| 1234.56 |" in after and "| 9876.5 |" in after
    # The sections before them are unchanged; without the files the sections go.
    head = before.split(report.GATEWAY_HEADER)[0]
    assert after.startswith(head)
    (tmp_path / "gateway.json").unlink()
    (tmp_path / "rollout-scale.json").unlink()
    (tmp_path / "verify-serve.json").unlink(missing_ok=True)
    assert report.render(tmp_path) + "\n" == head


def test_rollout_scale_harness_output_renders(tmp_path):
    """What bench/rollout_scale.py writes is what report.py renders (it once wrote keys the
    report did not read, and a real run crashed while regenerating RESULTS.md)."""
    from bench import rollout_scale

    assert rollout_scale.wave_sizes(1, [1, "100%"]) == [1]
    assert rollout_scale.wave_sizes(6, [1, "100%"]) == [1, 5]
    assert rollout_scale.wave_sizes(20, [1, "10%", "50%", "100%"]) == [1, 2, 10, 7]
    results = {"kind": "rollout_scale", "image": "photo-sync/systemd-fleet:bookworm",
               "forks": "ansible.cfg's", "runs": [
                   {"stores": 1, "seconds": 100.0, "rc": 0, "slowest_tasks": []},
                   {"stores": 6, "seconds": 150.0, "rc": 0,
                    "slowest_tasks": [{"task": "Gathering Facts", "seconds": 9.5}]}]}
    rollout_scale.summarise(results, [1, "100%"], ["--counts", "1", "6"])
    table = report.rollout_table(results)
    assert "`python -m bench.rollout_scale --counts 1 6`" in table
    assert "| 6 | 2 | 150.0 | 1.5x |" in table
    assert "Gathering Facts (9.5)" in table


def test_readme_capacity_figures_are_the_committed_json():
    # The README's capacity model quotes measured figures: a rerun that changes them must
    # change the README too, or this fails.
    readme = (BENCH.parent / "README.md").read_text()
    section = readme.split("\n## Capacity\n", 1)[1].split("\n## ", 1)[0]
    wrk = json.loads((RESULTS / "gateway.json").read_text())["measurements"]["wrk"]
    fleet = json.loads((RESULTS / "fleet-50.json").read_text())["scenarios"]
    quoted = {
        "fixed CPU-s per run": fleet["resync_nochange"]["ho_cpu_seconds_per_store"],
        "bytes through Python": wrk["download_api"]["api_cpu_s_per_gb"],
        "X-Accel through the gateway": wrk["download_gateway"]["api_cpu_s_per_gb"],
        "presigned via the gateway": wrk["download_presigned"]["api_cpu_s_per_gb"],
        "full syncs at once": fleet["full"]["ho_cpu_seconds_per_gb"],
    }
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    for words, value in quoted.items():
        row = next(line for line in rows if words in line)
        assert f"| {value} |" in row, (words, value, row)
    assert f"nginx {wrk['download_gateway']['nginx_cpu_s_per_gb']})" in section
    assert f"nginx {wrk['download_presigned']['nginx_cpu_s_per_gb']})" in section
    peak = max(sc["ho_peak_rss_mb"] for sc in fleet.values())
    assert f"{peak:.0f} MB" in section
    assert f"{fleet['single_full']['ho_peak_rss_mb']:.0f} MB with one" in section


# The shape bench/verify_serve.py --json writes (figures made up: this checks the rendering).
OPS_SAMPLE = {
    "started_at": "2026-12-02T09:00:00Z", "finished_at": "2026-12-02T09:10:00Z",
    "command": "python bench/verify_serve.py --photos 1000 --small-photos 10000 "
               "--json bench/results/verify-serve.json",
    "cpus": 2, "load_before": 3.1, "load_after": 4.2, "note": "a sample run",
    "verify_large": {"photos": 1000, "mb": 197.3, "full_sync_s": 11.11, "verify_s": 2.22,
                     "verify_vs_full_sync": 0.2, "reps": 3},
    "verify_small": {"photos": 10000, "mb": 35.5, "full_sync_s": 33.33, "verify_s": 9.99,
                     "verify_vs_full_sync": 0.3, "reps": 3},
    "serve": {"photos": 1000, "connections": 8, "seconds": 10, "cache_dir": True,
              "server_rss_mb": {"before": 101.5, "after": 102.5, "requests_between": 2000},
              "photo_server": {"requests": 6000, "req_per_s": 555.5, "mb_per_s": 111.1,
                               "p50_ms": 12.3, "p99_ms": 45.6,
                               "server_cpu_ms_per_request": 1.111},
              "nginx": {"requests": 40000, "req_per_s": 3999.9, "mb_per_s": 789.1,
                        "p50_ms": 1.23, "p99_ms": 7.89, "server_cpu_ms_per_request": 0.061},
              "rss_after_wrk_mb": 120.7, "req_per_s_vs_nginx": 0.139, "p99_vs_nginx": 5.78,
              "load_average": 5.5},
}


def _ops_rows(section: str) -> dict:
    return {line.split(" | ")[0][2:]: line for line in section.splitlines()
            if line.startswith("| ")}


def test_ops_section_shows_every_figure_and_whether_each_goal_is_met(tmp_path):
    (tmp_path / "verify-serve.json").write_text(json.dumps(OPS_SAMPLE))
    page = report.render(tmp_path)
    assert report.OPS_HEADER in page and report.ops_table(OPS_SAMPLE) in page
    rows = _ops_rows(report.ops_table(OPS_SAMPLE))
    # 20% is within the goal of 25%; 30% is not; 0.139x nginx is short of 0.5x.
    assert rows["large photos"].endswith("| 1000 | 197.3 | 3 | 11.11 | 2.22 | 20.0% | yes |")
    assert rows["small photos"].endswith("| 10000 | 35.5 | 3 | 33.33 | 9.99 | 30.0% | **no** |")
    assert rows["photo server (gunicorn, cache on)"].endswith(
        "| 555.5 | 111.1 | 12.3 | 45.6 | 1.111 |")
    assert rows["nginx, the same bytes from files"].endswith(
        "| 3999.9 | 789.1 | 1.23 | 7.89 | 0.061 |")
    assert rows["photo server req/s vs nginx"].endswith("| 0.139x | >= 0.5x | **no** |")
    assert "| 5.78x |" in rows["photo server p99 vs nginx"]
    for figure in ("101.5 MB before 2000 requests", "102.5 MB after", "120.7 MB after the wrk",
                   "3.1 before the run", "5.5 after", "4.2 at the end", "Note: a sample run",
                   OPS_SAMPLE["command"], "2026-12-02T09:00:00Z to 2026-12-02T09:10:00Z"):
        assert figure in page, figure
    # A changed figure changes the page; without the file the section goes.
    changed = {**OPS_SAMPLE, "verify_large": {**OPS_SAMPLE["verify_large"], "verify_s": 7.77}}
    (tmp_path / "verify-serve.json").write_text(json.dumps(changed))
    assert "| 7.77 |" in report.render(tmp_path)
    (tmp_path / "verify-serve.json").unlink()
    assert report.OPS_HEADER not in report.render(tmp_path)


def test_every_committed_results_file_has_one_section_of_results_md():
    # A results file no registered section claims would be left off the page without a word.
    claimed = {}
    for section in report.SECTIONS:
        for path in RESULTS.glob(section.files):
            claimed.setdefault(path.name, []).append(section.name)
    files = {p.name for p in RESULTS.glob("*.json")}
    assert set(claimed) == files and all(len(v) == 1 for v in claimed.values()), claimed
    # Each section's part of the page is its fixed text, then a table per file.
    fleet = report.section("fleet")
    part = report.render_section(fleet, RESULTS)
    assert part.startswith(report.FLEET_HEADER)
    assert part.count("| scenario |") == len(list(RESULTS.glob("fleet-*.json")))
