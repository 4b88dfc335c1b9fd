"""The edge agent as an operator drives it: settings, exit codes, status, metrics, bandwidth cap."""

from __future__ import annotations

import json
import time

import pytest

from conftest import assert_edge_matches_ho


@pytest.fixture(scope="module")
def ho(ho_stack, photo_factory):
    stack = ho_stack("edgecli")
    stack.import_dir(photo_factory(30, seed=11, min_kb=20, max_kb=80, mean_kb=40))
    return stack


def test_config_file_and_environment(ho, make_edge, tmp_path):
    edge = make_edge(ho)
    config = edge.write_config(tmp_path / "edge.env")
    env_only_url = {"PHOTO_SYNC_EDGE_DATABASE_URL": edge.database_url}
    # Everything from the file; the environment adds nothing.
    result = edge.cli("--config", str(config), "pull", "--mode", "full",
                      extra_env={k: "" for k in edge.env} | env_only_url)
    assert result.returncode == 0, result.stderr
    assert "full sync ok" in result.stdout and "downloaded 30" in result.stdout
    # The environment wins over the file: a wrong secret in the environment is used.
    result = edge.cli("--config", str(config), "pull",
                      extra_env={"PHOTO_SYNC_EDGE_STORE_SECRET": "not-the-secret"})
    assert result.returncode == 4
    assert "refused the credentials" in result.stderr


@pytest.mark.parametrize("env, message", [
    ({"PHOTO_SYNC_EDGE_STORE_ID": ""}, "PHOTO_SYNC_EDGE_STORE_ID is not set"),
    ({"PHOTO_SYNC_EDGE_STORE_ID": "store-7"}, "is not a UUID"),
    ({"PHOTO_SYNC_EDGE_HO_URL": "ho.example:8080"}, "must start with http"),
    ({"PHOTO_SYNC_EDGE_CONCURRENCY": "many"}, "is not a whole number"),
    ({"PHOTO_SYNC_EDGE_MAX_DELETE_FRACTION": "2"}, "outside"),
    ({"PHOTO_SYNC_EDGE_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"},
     "check PHOTO_SYNC_EDGE_DATABASE_URL"),
], ids=["no-store-id", "store-id-not-uuid", "ho-url-no-scheme", "concurrency-text",
        "fraction-above-1", "db-down"])
def test_bad_configuration_exits_2_with_a_clear_message(ho, make_edge, env, message):
    edge = make_edge(ho)
    result = edge.cli("pull", extra_env=env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_schema_missing_says_what_to_run(ho, make_edge):
    edge = make_edge(ho, schema=False)
    result = edge.cli("pull")
    assert result.returncode == 2
    assert "photo-sync-edge schema apply" in result.stderr
    check = edge.cli("schema", "check")
    assert check.returncode == 1 and "CREATE TABLE" in check.stdout
    assert edge.cli("schema", "apply").returncode == 0
    assert edge.cli("schema", "check").returncode == 0


def test_unreachable_ho_exits_4(ho, make_edge):
    edge = make_edge(ho, ho_url="http://127.0.0.1:9", retries=0)
    result = edge.cli("pull")
    assert result.returncode == 4
    assert "cannot reach HO API at http://127.0.0.1:9" in result.stderr


def test_status_metrics_and_reset_without_redownload(ho, make_edge, tmp_path):
    metrics = tmp_path / "metrics" / "photo_sync.prom"
    edge = make_edge(ho, metrics_file=str(metrics))
    result, summary = edge.pull("full")
    assert result.returncode == 0 and summary["downloaded"] == 30
    assert summary["reported"] == 30 and summary["report_pending"] == 0
    text = metrics.read_text()
    assert 'photo_sync_last_run_photos{mode="full",outcome="downloaded"} 30' in text
    assert 'photo_sync_photos{status="synced"} 30' in text
    assert "photo_sync_last_success_timestamp_seconds" in text

    status = json.loads(edge.cli("status", "--json").stdout)
    assert status["counts_by_status"] == {"synced": 30}
    assert status["bytes_held"] == sum(len(p[3]) for p in edge.photos().values())
    assert status["last_runs"][0]["status"] == "ok" and status["lag_seconds"] is not None

    # What rollback does: statuses back to pending, bytes kept. The next run checks the
    # bytes in the database instead of downloading them again.
    with edge.db() as conn:
        conn.execute("UPDATE product_photo SET sync_status = 'pending'")
        conn.execute("UPDATE product_photo SET image_binary = 'garbage'::bytea WHERE id = "
                     "(SELECT id FROM product_photo ORDER BY id LIMIT 1)")
    result, summary = edge.pull("full")
    assert result.returncode == 0
    assert summary["downloaded"] == 1, "only the photo with bad bytes is downloaded again"
    assert summary["updated"] == 29
    assert_edge_matches_ho(edge, ho)


def test_dry_run_counts_what_the_real_run_does_and_writes_nothing(ho, make_edge):
    """A dry run is the real run rolled back: the same counters (listed sizes as bytes),
    `changed` from them, ids on request, and nothing left in the store."""
    edge = make_edge(ho)
    with ho.catalog() as conn:
        listed_bytes = conn.execute("SELECT sum(size) AS n FROM product_photo "
                                    "WHERE deleted_at IS NULL").fetchone()["n"]
    result, dry = edge.pull("full", "--dry-run", "--list-ids")
    assert result.returncode == 0, result.stderr
    assert "plan" not in dry
    assert dry["dry_run"] is True and dry["changed"] is True and dry["status"] == "ok"
    assert (dry["listed"], dry["downloaded"], dry["bytes"]) == (30, 30, listed_bytes), dry
    assert len(set(dry["ids"]["download"])) == 30 and dry["ids"]["delete"] == []
    assert edge.photos() == {}
    status = json.loads(edge.cli("status", "--json").stdout)
    assert status["last_runs"] == [] and status["cursor"] is None
    assert status["pending_reports"] == 0
    plain = edge.cli("pull", "--mode", "full", "--dry-run")
    assert plain.returncode == 0 and "would download 30" in plain.stdout, plain.stdout

    result, real = edge.pull("full", "--list-ids")
    assert result.returncode == 0, result.stderr
    assert (real["downloaded"], real["bytes"], real["changed"]) == (30, listed_bytes, True)
    assert sorted(real["ids"]["download"]) == sorted(dry["ids"]["download"])
    result, again = edge.pull("full", "--dry-run")
    assert result.returncode == 0
    assert (again["changed"], again["downloaded"], again["unchanged"]) == (False, 0, 30), again
    assert again["ids"] is None


def test_bandwidth_cap_is_honoured(ho, make_edge):
    edge = make_edge(ho, bandwidth_limit=400_000, concurrency=4)
    started = time.monotonic()
    result, summary = edge.pull("full")
    elapsed = time.monotonic() - started
    assert result.returncode == 0
    # A cap is a floor on duration: the bytes cannot arrive faster than the cap allows
    # (less the small burst the limiter grants up front).
    assert elapsed >= summary["bytes"] / 400_000 - 0.5, (elapsed, summary["bytes"])
    assert_edge_matches_ho(edge, ho)
