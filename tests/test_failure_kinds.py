"""Why a photo failed is a kind carried from where the failure is raised (the edge
client's exceptions, the feed's validation) to the run summary and the metrics: the
checksum-mismatch alert counts the kind, never the words of an error.

The real HO under gunicorn, the agent as a process, and tests/faultproxy.py between them
corrupting one photo's bytes and damaging another's feed item."""

from __future__ import annotations

import pytest

from support.faultproxy import FaultProxy
from photo_sync import protocol

SMALL = {"min_kb": 20, "max_kb": 40, "mean_kb": 30}
COUNT = 6


@pytest.fixture(scope="module")
def ho(ho_stack, photo_factory):
    stack = ho_stack("kinds")
    stack.import_dir(photo_factory(COUNT, seed=57, **SMALL))
    yield stack
    stack.server.stop()


def feed_ids(ho) -> list[str]:
    with ho.catalog() as conn:
        rows = conn.execute("SELECT id::text AS id FROM product_photo WHERE deleted_at IS NULL "
                            "ORDER BY change_seq").fetchall()
    return [r["id"] for r in rows]


def metric_lines(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric in a textfile."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name):].rsplit(" ", 1)
            out[labels] = float(value)
    return out


def test_a_corrupted_photo_counts_as_a_mismatch_and_mismatch_in_other_words_does_not(
        ho, make_edge, tmp_path):
    ids = feed_ids(ho)
    corrupted, damaged = ids[1], ids[4]

    def damage(body: dict) -> dict:
        for item in body["photos"]:
            if item["id"] == damaged:
                # Not a number: the item fails validation, and its error quotes the value.
                item["size"] = "mismatch"
        return body

    metrics_file = tmp_path / "photo_sync.prom"
    with FaultProxy(ho.url) as proxy:
        proxy.corrupt(corrupted)
        proxy.rewrite = damage
        edge = make_edge(ho, ho_url=proxy.url, metrics_file=str(metrics_file))
        result, summary = edge.pull("full")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert summary["failed"] == 2 and summary["downloaded"] == COUNT - 2, summary

    failures = {f["photo_id"]: f for f in summary["failures"]}
    assert failures[corrupted]["kind"] == protocol.FAILURE_CHECKSUM_MISMATCH
    assert failures[damaged]["kind"] == protocol.FAILURE_INVALID
    # The words an old text match would have counted as a second mismatch.
    assert "mismatch" in failures[damaged]["error"], failures[damaged]
    assert summary["failed_by_kind"] == {protocol.FAILURE_CHECKSUM_MISMATCH: 1,
                                         protocol.FAILURE_INVALID: 1}

    text = metrics_file.read_text()
    assert metric_lines(text, "photo_sync_last_run_checksum_mismatches") == {'{mode="full"}': 1}
    by_kind = metric_lines(text, "photo_sync_last_run_failures")
    assert by_kind['{mode="full",kind="checksum_mismatch"}'] == 1
    assert by_kind['{mode="full",kind="invalid"}'] == 1
    assert sum(by_kind.values()) == 2
    assert set(by_kind) == {f'{{mode="full",kind="{kind}"}}' for kind in protocol.FAILURE_KINDS}
