"""The Prometheus alerting rules: promtool checks and unit-tests them, and the metrics the
agent writes are the ones the rules read (a renamed metric would silently mute an alert).

promtool comes from Debian's `prometheus` package; bootstrap installs it. These tests fail,
never skip, without it: an untested rules file must not pass as green."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from photo_sync.edge import metrics
from photo_sync.edge.client import VerificationError, _verify
from photo_sync.edge.engine import RunSummary
from photo_sync.edge.verify import VerifyResult
from photo_sync.protocol import Checksums

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"
RULES = MONITORING / "photo-sync.rules.yml"
# Series the rules read that the agent does not write: node_exporter's file system,
# blackbox_exporter's probe, Prometheus's own `up`, and the operator's configured capacity.
NOT_FROM_THE_AGENT = {"photo_sync_database_capacity_bytes"}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    assert exe, ("promtool is missing: apt-get install --no-install-recommends prometheus "
                 "(scripts/bootstrap.sh installs it)")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def rule_exprs() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def test_rules_are_valid():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_each_alert_fires_where_it_should_and_only_there():
    tests = sorted((MONITORING / "tests").glob("*.yml"))
    assert tests
    result = promtool("test", "rules", *map(str, tests))
    assert result.returncode == 0, result.stdout + result.stderr
    # Every alert has at least one test case that expects it to fire.
    covered = "".join(path.read_text() for path in tests)
    for alert in rule_exprs():
        assert f"alertname: {alert}" in covered, f"{alert} has no promtool test"


def _summary(**counts) -> RunSummary:
    summary = RunSummary(mode="full", status="partial", **counts)
    try:
        _verify(Checksums.of(b"bytes that arrived"), "0" * 32, None, "HO")
    except VerificationError as exc:  # the agent's own wording of a mismatch
        mismatch = f"checksum verification failed: {exc}"
    summary.failures = [{"photo_id": "a", "error": mismatch},
                        {"photo_id": "b", "error": "HO answered 404 object_missing: gone"}]
    return summary


def _status() -> dict:
    return {"counts_by_status": {"synced": 8, "failed": 2}, "bytes_held": 900,
            "lag_seconds": 5.0, "pending_reports": 0, "last_success_at": None}


def test_the_agent_writes_every_series_the_rules_read():
    text = (metrics.render(_summary(listed=10, downloaded=8, failed=2), _status(),
                           database_bytes=1000, database_dir=str(MONITORING))
            + metrics.render_verify(VerifyResult(corrupt=["x"]))
            + metrics.render_run("full", 1_800_000_000, running=True))
    written = set(re.findall(r"^(photo_sync_\w+)", text, re.M))
    # Metric names, not the quoted job names that also start with photo_sync_.
    read = set(re.findall(r'(?<!["\w])(photo_sync_\w+)(?![\w"])',
                          " ".join(rule_exprs().values())))
    assert len(read) >= 8, read
    assert read - NOT_FROM_THE_AGENT <= written, read - NOT_FROM_THE_AGENT - written
    lint = subprocess.run([shutil.which("promtool") or "promtool", "check", "metrics"],
                          input=text, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.parametrize("failed, mismatched, expected", [
    (2, True, {"PhotoSyncFailureRateHigh", "PhotoSyncChecksumMismatch"}),
    (0, False, set()),
], ids=["2-of-10-failed-one-mismatch", "clean-run"])
def test_a_real_textfile_fires_the_alerts_it_should(tmp_path, failed, mismatched, expected):
    """The textfile the agent renders, scraped as node_exporter would, through the rules."""
    summary = _summary(listed=10, downloaded=10 - failed, failed=failed)
    if not mismatched:
        summary.failures = []
    text = metrics.render(summary, _status(), database_bytes=1000)
    series = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        name, _, labels = name_labels.partition("{")
        labels = labels.rstrip("}")
        joined = ",".join(filter(None, ['instance="store1:9100"', 'job="node"', labels]))
        series.append({"series": f"{name}{{{joined}}}", "values": f"{float(value)}x10"})
    # ALERTS is the series Prometheus keeps for every alert: which ones are firing.
    samples = [{"labels": f'{{alertname="{name}", instance="store1:9100"}}', "value": 1}
               for name in sorted(expected)]
    test_file = tmp_path / "scraped.test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "tests": [{
        "interval": "1m", "input_series": series,
        "promql_expr_test": [{
            "expr": 'count by (alertname, instance) (ALERTS{alertstate="firing"})',
            "eval_time": "5m", "exp_samples": samples}]}]}))
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_failed_run_keeps_the_last_success_the_alert_measures_from():
    """Without it, a store whose runs keep failing would drop the series that
    PhotoSyncNotCompleted reads, and the alert could never fire."""
    failed = RunSummary(mode="incremental", status="failed", error="HO unreachable")
    status = {**_status(), "last_success_at": "2026-12-01T10:00:00+00:00"}
    text = metrics.render(failed, status)
    assert "photo_sync_last_success_timestamp_seconds 1796119200" in text
    assert 'photo_sync_last_run_success{mode="incremental"} 0' in text
    never = metrics.render(failed, _status())
    assert "photo_sync_last_success_timestamp_seconds" not in never
