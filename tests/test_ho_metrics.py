"""HO's Prometheus endpoint under real gunicorn (two workers): the request series add up
across workers, the per-store series say what `photo-sync-ho fleet --json` says about the
same catalog, the endpoint is not on the API's address, and nothing secret is in it."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from photo_sync.ho import catalog, metrics
from photo_sync.ho import fleet as fleet_view
from support import testbed
from support.prometheus import by_label, scrape, value

BIN = Path(sys.executable).parent


def fleet_json(ho) -> dict:
    result = subprocess.run([str(BIN / "photo-sync-ho"), "fleet", "--json"],
                            env={**os.environ, **ho.env}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def report(ho, store_id: str, items: list[tuple[str, int, str]]) -> None:
    """The store reports (photo id, version, status) items through the real API."""
    batch = [{"photo_id": photo, "version": version, "status": status,
              "synced_at": "2026-12-01T10:00:00Z" if status == "synced" else None,
              "error": "HO answered 404 object_missing" if status == "failed" else None}
             for photo, version, status in items]
    response = ho.session(store_id).post(f"{ho.api}/sync/product-photos/status/", timeout=30,
                                         json={"store_id": store_id, "sync_batch": batch})
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def fleet(ho_stack, photo_factory):
    """8 photos changed an hour apart (the oldest 8 h ago). Store A reported everything
    synced, then one photo was deleted (A still holds it); B synced the 3 oldest and
    failed 2; C never reported; D synced everything and was disabled."""
    ho = ho_stack("metrics")
    ho.import_dir(photo_factory(8, seed=77, min_kb=3, max_kb=8, mean_kb=5))
    with ho.catalog() as conn:
        conn.execute("SET session_replication_role = replica")  # keep our updated_at
        conn.execute("UPDATE product_photo p SET updated_at = now() - (o.n * interval '1 hour') "
                     "FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM product_photo) "
                     "o WHERE o.id = p.id")
        photos = [(r["id"], r["version"]) for r in conn.execute(
            "SELECT id::text AS id, version FROM product_photo ORDER BY updated_at").fetchall()]
    a, b, c, d = (ho.add_store(name)[0] for name in ("a", "b", "c", "d"))
    report(ho, a, [(p, v, "synced") for p, v in photos])
    report(ho, b, [(p, v, "synced") for p, v in photos[:3]]
           + [(p, v, "failed") for p, v in photos[3:5]])
    report(ho, d, [(p, v, "synced") for p, v in photos])
    ho.cli("store", "disable", d)
    ho.cli("delete", photos[-1][0])
    return ho, {"a": a, "b": b, "c": c, "d": d}, photos


def test_per_store_series_agree_with_the_fleet_command(fleet):
    ho, stores, photos = fleet
    started = time.time()
    view = fleet_json(ho)
    samples = scrape(ho.server.metrics_url)
    elapsed = time.time() - started
    assert value(samples, "photo_sync_ho_catalog_up") == 1
    assert value(samples, "photo_sync_ho_storage_up") == 1
    assert value(samples, "photo_sync_ho_catalog_photos") == view["catalog_photos"] == 7
    last_change = value(samples, "photo_sync_ho_catalog_last_change_timestamp_seconds")
    assert 0 < time.time() - last_change < 600  # the deletion just now
    assert {s["store_id"] for s in view["stores"]} == set(stores.values())
    for store in view["stores"]:
        sid = store["store_id"]
        states = by_label(samples, "photo_sync_ho_store_photos", "state", store=sid)
        assert states == {"synced": store["synced"], "failed": store["failed"],
                          "pending": store["pending"]}, store["name"]
        assert value(samples, "photo_sync_ho_store_deletions_pending", store=sid) == \
            store["deletions_pending"]
        assert value(samples, "photo_sync_ho_store_enabled", store=sid) == store["active"]
        last = store["last_report_at"]
        reported = value(samples, "photo_sync_ho_store_last_report_timestamp_seconds", store=sid)
        assert reported == (pytest.approx(_epoch(last), abs=0.001) if last else 0)
        # Two snapshots a moment apart: the lags differ by at most that moment.
        lag = value(samples, "photo_sync_ho_store_lag_seconds", store=sid)
        assert abs(lag - store["lag_seconds"]) <= elapsed + 0.2, store["name"]
    # What the stores did, as the operator would read it.
    a, b, c = (stores[k] for k in "abc")
    assert by_label(samples, "photo_sync_ho_store_photos", "state", store=b) == {
        "synced": 3, "failed": 2, "pending": 2}
    # A holds the deleted photo: one deletion pending, changed moments ago.
    assert value(samples, "photo_sync_ho_store_deletions_pending", store=a) == 1
    assert value(samples, "photo_sync_ho_store_lag_seconds", store=a) < 600
    # B's oldest gap is the 4th oldest photo (5 h old), C's the oldest (8 h).
    for store, hours in ((b, 5), (c, 8)):
        lag = value(samples, "photo_sync_ho_store_lag_seconds", store=store)
        assert hours * 3600 - 60 < lag < hours * 3600 + 600
    assert value(samples, "photo_sync_ho_store_last_report_timestamp_seconds", store=c) == 0
    assert value(samples, "photo_sync_ho_store_enabled", store=stores["d"]) == 0


def _epoch(iso: str) -> float:
    import datetime as dt
    return dt.datetime.fromisoformat(iso).timestamp()


@pytest.fixture(scope="module")
def random_ho(ho_stack, photo_factory):
    ho = ho_stack("metrics-random", workers=1)
    ho.import_dir(photo_factory(12, seed=79, min_kb=3, max_kb=6, mean_kb=4))
    return ho


@pytest.mark.parametrize("seed", range(6))
def test_one_statement_finds_the_lag_the_store_by_store_walk_finds(random_ho, seed):
    """FLEET_SQL's gap search against photo_sync.ho.fleet's per-store queries, on random
    report histories: synced at the current or an older version, failed, deleted, none."""
    rng = random.Random(seed)
    with random_ho.catalog() as conn:
        ids = [r["id"] for r in conn.execute("SELECT id FROM product_photo").fetchall()]
        conn.execute("SET session_replication_role = replica")
        for photo in ids:
            conn.execute("UPDATE product_photo SET updated_at = now() - %s * interval '1 minute',"
                         " deleted_at = CASE WHEN %s THEN now() - %s * interval '1 minute' END "
                         "WHERE id = %s", (rng.randrange(60, 6000), rng.random() < 0.2,
                                           rng.randrange(60, 6000), photo))
        for n in range(6):
            store = uuid.uuid4()
            conn.execute("INSERT INTO sync_store (id, name, secret_hash) VALUES (%s, %s, 'x')",
                         (store, f"random-{n}"))
            for photo in ids:
                status = rng.choice(["synced", "synced", "synced", "failed", "deleted", None])
                if status:
                    conn.execute(
                        "INSERT INTO photo_sync_status (store_id, photo_id, version, status) "
                        "SELECT %s, id, version - %s, %s FROM product_photo WHERE id = %s",
                        (store, int(rng.random() < 0.15), status, photo))
        conn.execute("SET session_replication_role = DEFAULT")
        walked = {s["store_id"]: s for s in fleet_view.fleet(conn)["stores"]}
        figures = metrics.fleet_figures(conn)
    assert set(walked) == set(figures["stores"])
    for store_id, store in figures["stores"].items():
        expected = walked[store_id]
        for key in ("synced", "failed", "pending", "deletions_pending"):
            assert store[key] == expected[key], (seed, key)
        # Changes are minutes apart; one snapshot after the other is well under one.
        assert abs(store["lag_seconds"] - expected["lag_seconds"]) < 30, seed


def test_requests_add_up_across_gunicorn_workers(ho_stack, photo_factory):
    ho = ho_stack("metrics-requests", workers=2)
    ho.import_dir(photo_factory(2, seed=78, min_kb=3, max_kb=6, mean_kb=4))
    store, secret = ho.add_store("counted")
    assert len(ho.server.worker_pids()) == 2
    for _ in range(6):  # a new connection each: gunicorn hands them to either worker
        assert ho.ask_token(store, secret).status_code == 200
    assert ho.ask_token(store, "wrong-secret-of-16+").status_code == 401
    token = ho.token(store, secret)
    listing = ho.list_photos(token).json()["photos"]
    photo = listing[0]
    got = requests.get(f"{ho.api}/sync/product-photos/{photo['id']}/download/", timeout=30,
                       headers={"Authorization": f"Bearer {token}"})
    assert got.status_code == 200 and len(got.content) == photo["size"]
    assert requests.get(f"{ho.api}/sync/product-photos/", timeout=30,
                        headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    samples = scrape(ho.server.metrics_url)
    tokens = by_label(samples, "photo_sync_ho_requests_total", "status", endpoint="api_v1.token")
    assert tokens == {"200": 7, "401": 1}
    assert value(samples, "photo_sync_ho_request_seconds_count", endpoint="api_v1.token") == 8
    assert value(samples, "photo_sync_ho_token_failures_total", reason="invalid_credentials") == 1
    assert value(samples, "photo_sync_ho_token_failures_total", reason="invalid") == 1
    assert value(samples, "photo_sync_ho_token_failures_total", reason="expired") == 0
    assert value(samples, "photo_sync_ho_downloads_total", path="stream") == 1
    assert value(samples, "photo_sync_ho_download_bytes_total", path="stream") == photo["size"]
    assert value(samples, "photo_sync_ho_backend_errors_total", backend="catalog") == 0
    # Nothing secret and no photo id in any label or value.
    text = requests.get(ho.server.metrics_url, timeout=30).text
    for secret_text in (secret, token, ho.env["PHOTO_SYNC_HO_JWT_SECRET"],
                        ho.env["PHOTO_SYNC_HO_S3_SECRET_KEY"], photo["id"]):
        assert secret_text not in text
    lint = subprocess.run([shutil.which("promtool") or "promtool", "check", "metrics"],
                          input=text, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_the_api_address_has_no_metrics(fleet):
    ho = fleet[0]
    for path in ("/metrics", "/api/v1/metrics"):
        response = requests.get(ho.url + path, timeout=30)
        assert response.status_code == 404 and "photo_sync_ho" not in response.text


def test_a_restart_starts_the_counts_again(ho_stack, tmp_path):
    """The unit's PROMETHEUS_MULTIPROC_DIR outlives a gunicorn: the master empties it at
    start, or the last run's counts would be added to the new run's."""
    ho = ho_stack("metrics-restart", workers=2,
                  extra_env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")})
    for _ in range(3):
        requests.get(f"{ho.api}/health/", timeout=30)
    before = value(scrape(ho.server.metrics_url), "photo_sync_ho_requests_total",
                   endpoint="api_v1.health", status="200")
    assert before >= 3
    ho.server.stop()
    ho.server.start()
    after = value(scrape(ho.server.metrics_url), "photo_sync_ho_requests_total",
                  endpoint="api_v1.health", status="200")
    assert after < before  # only the new master's health checks


def test_a_catalog_that_cannot_be_read_is_catalog_up_0(pg, s3, bed_root):
    env = testbed.ho_environment(pg.url("no_such_catalog"), s3)
    server = testbed.HOServer(bed_root / "metrics-no-catalog", env, workers=1)
    # Its health check waits for the catalog (3 s) longer than the testbed's probe does:
    # up means the metrics endpoint answers.
    server._answering = lambda: requests.get(server.metrics_url, timeout=10).ok
    server.start(wait_healthy=False)
    try:
        samples = scrape(server.metrics_url)
        assert value(samples, "photo_sync_ho_catalog_up") == 0
        # Nothing ran init-db here, so its bucket does not exist either: S3 is down for HO.
        assert value(samples, "photo_sync_ho_storage_up") == 0
        assert not by_label(samples, "photo_sync_ho_store_enabled", "store")
        # The API's own answers name the catalog, and the counter says so.
        assert requests.get(f"{server.url}/api/v1/health/", timeout=30).status_code == 503
        requests.post(f"{server.url}/api/v1/auth/token/", timeout=30,
                      json={"store_id": str(uuid.uuid4()), "secret": "x" * 20})
        samples = scrape(server.metrics_url)
        assert value(samples, "photo_sync_ho_backend_errors_total", backend="catalog") >= 1
    finally:
        server.stop()


@pytest.mark.parametrize("raw", ["9464", "host:", "host:99999", "a:b"])
def test_a_bad_metrics_bind_is_refused(raw):
    from photo_sync.config import ConfigError
    from photo_sync.ho.settings import HOSettings
    with pytest.raises(ConfigError, match="METRICS_BIND"):
        HOSettings.load(environ={"PHOTO_SYNC_HO_METRICS_BIND": raw}, need_jwt=False,
                        need_s3=False, need_database=False)


def test_no_metrics_bind_means_no_endpoint(ho_stack):
    ho = ho_stack("metrics-off", workers=1, extra_env={"PHOTO_SYNC_HO_METRICS_BIND": "off"})
    with pytest.raises(requests.ConnectionError):
        requests.get(ho.server.metrics_url, timeout=5)
    assert requests.get(f"{ho.api}/health/", timeout=30).status_code == 200


def test_fleet_figures_with_no_store(pg):
    url = pg.create_db("metrics_empty")
    with catalog.connect(url, autocommit=True) as conn:
        catalog.init_db(conn)
        assert metrics.fleet_figures(conn) == {"catalog_photos": 0, "last_change": 0.0,
                                               "stores": {}}


# The alerting rules on these series (monitoring/photo-sync-ho.rules.yml) ----------------

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"
HO_RULES = MONITORING / "photo-sync-ho.rules.yml"


def _promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: scripts/bootstrap.sh installs Debian's prometheus"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


def ho_rule_exprs() -> dict[str, str]:
    import yaml
    groups = yaml.safe_load(HO_RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def test_ho_rules_are_valid_and_each_alert_has_a_firing_test():
    result = _promtool("check", "rules", str(HO_RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout
    tests = MONITORING / "tests" / "photo-sync-ho.test.yml"
    result = _promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr
    text = tests.read_text()
    for alert in ho_rule_exprs():
        assert f'alertname="{alert}",alertstate="firing",' in text, f"{alert} has no test"


def test_the_ho_rules_read_only_series_ho_serves(fleet):
    """A renamed series would silently mute an alert."""
    served = {name for name, _ in scrape(fleet[0].server.metrics_url)}
    read = set()
    for expr in ho_rule_exprs().values():
        read |= set(re.findall(r"\b(photo_sync_ho_\w+)", expr))
    assert len(read) >= 8 and read <= served, read - served
