"""The run-in-progress signal and the database's file system, written by the real agent
against the real test bed (HO under gunicorn, PostgreSQL, S3), with downloads held back by
tests/support/faultproxy.py so a run lasts long enough to be looked at.

- while a run runs, `photo_sync_run.prom` says so, with the run's start; once it ended, it
  says it ended and keeps that start;
- a run killed mid-way leaves the signal set with its old start (the alert rule then fires
  for it), and the next run replaces it with its own;
- the pull's textfile names the mount point of the file system holding PostgreSQL's data
  directory, the label the storage rule joins node_exporter's file systems on.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest
import yaml

from conftest import BIN
from photo_sync.edge.settings import EdgeSettings
from photo_sync.edge.store import EdgeStore
from support.faultproxy import FaultProxy
from support.textfile import samples
from test_alerts import RULES, promtool

COUNT = 6
SMALL = {"min_kb": 10, "max_kb": 20, "mean_kb": 15}


@pytest.fixture(scope="module")
def ho(ho_stack, photo_factory):
    stack = ho_stack("run_signal")
    stack.import_dir(photo_factory(COUNT, seed=61, **SMALL))
    yield stack
    stack.server.stop()


def start_pull(edge) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "photo-sync-edge"), "pull", "--mode", "full", "--json"],
                            env={**os.environ, **edge.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_signal(path, proc: subprocess.Popen, deadline_s: float = 60) -> dict[str, float]:
    """The run signal once it says a run is in progress (fails if the pull ends first)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if path.exists():
            found = samples(path)
            if found.get('photo_sync_run_in_progress{mode="full"}') == 1:
                return found
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the pull ended ({proc.returncode}) before its run signal "
                                 f"said it runs: {out} {err}")
        time.sleep(0.05)
    raise AssertionError("the run signal never said a run is in progress")


def test_the_signal_is_set_while_a_run_runs_and_cleared_after(ho, make_edge, tmp_path):
    metrics_file = tmp_path / "textfile" / "photo_sync.prom"
    signal_file = tmp_path / "textfile" / "photo_sync_run.prom"
    with FaultProxy(lambda: ho.url) as proxy:
        proxy.download_delay = 0.5  # concurrency 1: the run lasts COUNT x 0.5 s at least
        edge = make_edge(ho, ho_url=proxy.url, concurrency=1, metrics_file=str(metrics_file))
        before = int(time.time())
        proc = start_pull(edge)
        try:
            running = wait_for_signal(signal_file, proc)
            started = running['photo_sync_run_started_timestamp_seconds{mode="full"}']
            assert before <= started <= time.time() + 1, (before, running)
            # The last-run textfile is not there yet: this is the store's first run.
            assert not metrics_file.exists()
            out, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (out, err)
    assert samples(signal_file) == {
        'photo_sync_run_in_progress{mode="full"}': 0,
        'photo_sync_run_started_timestamp_seconds{mode="full"}': started}
    assert samples(metrics_file)['photo_sync_last_run_success{mode="full"}'] == 1


def test_a_killed_run_keeps_its_signal_until_the_next_run_starts(ho, make_edge, tmp_path):
    metrics_file = tmp_path / "photo_sync.prom"
    signal_file = tmp_path / "photo_sync_run.prom"
    with FaultProxy(lambda: ho.url) as proxy:
        proxy.download_delay = 2.0
        edge = make_edge(ho, ho_url=proxy.url, concurrency=1, metrics_file=str(metrics_file))
        proc = start_pull(edge)
        try:
            killed = wait_for_signal(signal_file, proc)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.wait()
        assert samples(signal_file) == killed  # nothing cleared it
        assert fires_after_an_hour(signal_file)

        time.sleep(1.1)  # the next run's start falls in a later second than the killed one's
        proxy.download_delay = 0
        result, summary = edge.pull("full")
    assert result.returncode == 0, (result.stdout, result.stderr)
    after = samples(signal_file)
    old = killed['photo_sync_run_started_timestamp_seconds{mode="full"}']
    assert after['photo_sync_run_started_timestamp_seconds{mode="full"}'] > old
    assert after['photo_sync_run_in_progress{mode="full"}'] == 0
    assert not fires_after_an_hour(signal_file)


def fires_after_an_hour(signal_file) -> bool:
    """Whether PhotoSyncRunTooLong fires for this textfile an hour and a minute after the
    run started. promtool's clock starts at 0, so the start time is moved to 0 with it."""
    series = []
    for key, value in samples(signal_file).items():
        name, _, labels = key.partition("{")
        if name == "photo_sync_run_started_timestamp_seconds":
            value = 0
        labels = ",".join(['instance="store1:9100"', 'job="node"', labels.rstrip("}")])
        series.append({"series": f"{name}{{{labels}}}", "values": f"{value:g}x70"})
    test_file = signal_file.parent / "signal.test.yml"
    firing = [{"labels": '{alertname="PhotoSyncRunTooLong"}', "value": 1}]
    results = {}
    for expected in (firing, []):
        test_file.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "tests": [{
            "interval": "1m", "input_series": series,
            "promql_expr_test": [{
                "expr": 'count by (alertname) (ALERTS{alertname="PhotoSyncRunTooLong",'
                        'alertstate="firing"})',
                "eval_time": "61m", "exp_samples": expected}]}]}))
        results[bool(expected)] = promtool("test", "rules", str(test_file)).returncode == 0
    assert results[True] != results[False], results  # exactly one of the two holds
    return results[True]


def test_the_textfile_names_the_database_file_system(ho, make_edge, tmp_path):
    metrics_file = tmp_path / "photo_sync.prom"
    edge = make_edge(ho, metrics_file=str(metrics_file))
    result, _ = edge.pull("full")
    assert result.returncode == 0, (result.stdout, result.stderr)
    with edge.db() as conn:
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]
    # coreutils' own answer to "which mount holds this", as node_exporter would label it
    mount = subprocess.run(["stat", "-c", "%m", data_dir], capture_output=True, text=True,
                           check=True).stdout.strip()
    found = [key for key in samples(metrics_file)
             if key.startswith("photo_sync_database_filesystem_info")]
    assert found == [f'photo_sync_database_filesystem_info{{mountpoint="{mount}"}}'], found
    assert re.search(r'^photo_sync_database_filesystem_info\{mountpoint="[^"]+"\} 1$',
                     metrics_file.read_text(), re.M)


def test_a_role_that_may_not_see_the_data_directory_gets_none(ho, make_edge):
    """The agent's usual role (no superuser, no pg_read_all_settings) is not told where
    the data lives: no filesystem series rather than a wrong one, and the rule falls back
    to a /var/lib/postgresql* mount."""
    edge = make_edge(ho)
    with edge.db() as conn:
        conn.execute("DROP ROLE IF EXISTS photo_sync_plain")
        conn.execute("CREATE ROLE photo_sync_plain NOLOGIN NOSUPERUSER")
    store = EdgeStore.from_settings(EdgeSettings.load(environ=edge.env))
    try:
        assert store.data_directory()  # as the test bed's superuser
        store.conn.execute("SET ROLE photo_sync_plain")
        assert store.data_directory() is None
        store.conn.execute("RESET ROLE")
        store.conn.execute("GRANT pg_read_all_settings TO photo_sync_plain")
        store.conn.execute("SET ROLE photo_sync_plain")
        assert store.data_directory()
    finally:
        store.close()
