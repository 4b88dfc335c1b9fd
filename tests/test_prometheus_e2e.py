"""End to end with the real parts: a real Prometheus scrapes a real HO under gunicorn and a
store's textfile through a real node_exporter, evaluates both rules files (their `for:`
shortened to 0s, so a test waits seconds, not minutes), and serves the Grafana dashboard's
queries.

A store syncs while three of ten photos' bytes are missing from S3 (HO answers 404
object_missing for them): the store's own alert (PhotoSyncFailureRateHigh, from its
textfile) and HO's fleet alert (PhotoSyncHOFleetFailureRateHigh, from what it reported)
reach `firing` in /api/v1/alerts; the bytes come back, the store's next run syncs them,
and both resolve."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import yaml
from minio import Minio

from support.prometheus import NodeExporter, PrometheusServer
from support.testbed import wait_for

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"
DASHBOARD = MONITORING / "grafana" / "photo-sync-fleet.json"
# Grafana's own variables, as a Prometheus query needs them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}


def short_rules(source: Path, target: Path) -> Path:
    """`source` with every alert's `for:` set to 0s."""
    rules = yaml.safe_load(source.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
    target.write_text(yaml.safe_dump(rules))
    return target


@pytest.fixture(scope="module")
def bed(ho_stack, photo_factory, make_edge, s3, tmp_path_factory):
    root = tmp_path_factory.mktemp("prometheus-e2e")
    ho = ho_stack("e2e", workers=2)
    ho.import_dir(photo_factory(10, seed=91, min_kb=3, max_kb=8, mean_kb=5))
    healthy = make_edge(ho)
    result, summary = healthy.pull("full")
    assert result.returncode == 0 and summary["reported"] == 10, result.stderr
    textfiles = root / "textfile"
    failing = make_edge(ho, metrics_file=str(textfiles / "photo_sync.prom"))
    node = NodeExporter(root / "node", textfiles).start()
    rules = [short_rules(MONITORING / name, root / name)
             for name in ("photo-sync.rules.yml", "photo-sync-ho.rules.yml")]
    prom = PrometheusServer(root / "prom", {
        "photo_sync_ho_api": [f"127.0.0.1:{ho.server.metrics_port}"],
        "node": [f"127.0.0.1:{node.port}"]}, rules).start()
    try:
        wait_for(prom.targets_up, 60, "Prometheus scraping HO and node_exporter")
        yield ho, healthy, failing, prom, s3
    finally:
        prom.stop()
        node.stop()


def _firing(prom: PrometheusServer, name: str, **labels) -> bool:
    return prom.alert_state(name, **labels) == "firing"


def test_every_dashboard_query_parses_and_names_series_that_exist(bed):
    ho, healthy, _, prom, _ = bed
    wait_for(lambda: prom.query(
        f'photo_sync_ho_store_photos{{store="{healthy.store_id}",state="synced"}} == 10'),
        60, "the healthy store's figures in Prometheus")
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"]
             for target in panel.get("targets", [])]
    assert len(exprs) >= 20
    names = set()
    for expr in exprs:
        query = expr.replace("$store", healthy.store_id)
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"a Grafana variable this test does not know: {expr}"
        prom.query(query)  # AssertionError with Prometheus's parse error otherwise
        names |= set(re.findall(r"\b(photo_sync_\w+)", query))
    assert len(names) >= 12, names
    for name in sorted(names):
        assert prom.query(f"count({name})"), f"the dashboard reads {name}, which nothing serves"
    # The store variable lists the stores.
    assert healthy.store_id in [r["metric"]["store"] for r in prom.query(
        "max by (store) (photo_sync_ho_store_enabled)")]


def test_a_failing_store_fires_its_alerts_and_they_resolve(bed):
    ho, healthy, failing, prom, s3 = bed
    client = Minio(s3.endpoint, s3.access_key, s3.secret_key, secure=False, region="us-east-1")
    bucket = ho.env["PHOTO_SYNC_HO_S3_BUCKET"]
    with ho.catalog() as conn:
        keys = [r["object_key"] for r in conn.execute(
            "SELECT object_key FROM product_photo ORDER BY id LIMIT 3").fetchall()]
    kept = {}
    for key in keys:
        response = client.get_object(bucket, key)
        kept[key] = response.read()
        response.close()
        response.release_conn()
        client.remove_object(bucket, key)
    assert not _firing(prom, "PhotoSyncHOFleetFailureRateHigh")

    result, summary = failing.pull("full")
    assert result.returncode == 1 and summary["failed"] == 3, result.stderr
    # HO: 3 of the fleet's 20 (store, photo) pairs failed, 15%; the store: 3 of 10.
    wait_for(lambda: _firing(prom, "PhotoSyncHOFleetFailureRateHigh"), 90,
             "PhotoSyncHOFleetFailureRateHigh firing")
    wait_for(lambda: _firing(prom, "PhotoSyncFailureRateHigh"), 90,
             "PhotoSyncFailureRateHigh firing (the store's textfile via node_exporter)")
    failed = prom.query(
        f'max(photo_sync_ho_store_photos{{store="{failing.store_id}",state="failed"}})')
    assert float(failed[0]["value"][1]) == 3
    assert not _firing(prom, "PhotoSyncHOServerErrorsHigh")  # a 404 is no server error

    for key, data in kept.items():
        client.put_object(bucket, key, io.BytesIO(data), len(data))
    result, summary = failing.pull("incremental")
    assert result.returncode == 0 and summary["failed"] == 0, result.stderr
    wait_for(lambda: prom.alert_state("PhotoSyncHOFleetFailureRateHigh") is None, 90,
             "PhotoSyncHOFleetFailureRateHigh resolved")
    wait_for(lambda: prom.alert_state("PhotoSyncFailureRateHigh") is None, 90,
             "PhotoSyncFailureRateHigh resolved")
