"""The edge agent against a damaged feed, a mass delete at HO, and a tight in-flight budget.

A damaged HO is played by tests/support/faultproxy.py, a proxy that rewrites the real HO
API's feed pages; the rest is the real HO under gunicorn and the agent as a
process (`photo-sync-edge`), except the in-flight budget test, which runs the
engine in this process to shrink its byte budget to the size of test photos.
"""

from __future__ import annotations

import json

import pytest

from conftest import assert_edge_matches_ho, assert_no_bad_bytes
from support.faultproxy import FaultProxy
from photo_sync.edge import engine
from photo_sync.edge.settings import EdgeSettings

SMALL = {"min_kb": 20, "max_kb": 60, "mean_kb": 30}
COUNT = 12
RAW_BAD_ID = "not-a-uuid-" + "z" * 200


@pytest.fixture(scope="module")
def ho(ho_stack, photo_factory):
    """An HO the tests below only read."""
    stack = ho_stack("feed")
    stack.import_dir(photo_factory(COUNT, seed=41, **SMALL))
    yield stack
    stack.server.stop()


@pytest.fixture
def proxy(ho):
    with FaultProxy(ho.url) as p:
        yield p


def feed_ids(ho) -> list[str]:
    with ho.catalog() as conn:
        rows = conn.execute("SELECT id::text AS id FROM product_photo WHERE deleted_at IS NULL "
                            "ORDER BY change_seq").fetchall()
    return [r["id"] for r in rows]


def ho_status(ho, store_id: str, photo_id: str) -> dict | None:
    with ho.catalog() as conn:
        return conn.execute("SELECT status, version, error FROM photo_sync_status WHERE "
                            "store_id = %s AND photo_id = %s", (store_id, photo_id)).fetchone()


def status_json(edge) -> dict:
    result = edge.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def corrupter(bad_date: str, bad_deleted: str, long_name: str):
    """A feed rewrite: three items damaged in one field each, and an item with no usable
    id added to the page of the first."""

    def rewrite(body: dict) -> dict:
        for item in body["photos"]:
            if item["id"] == bad_date:
                item["updated_at"] = "2026-13-45T99:00:00+00:00"
                body["photos"].append({"id": RAW_BAD_ID, "deleted": False})
            elif item["id"] == bad_deleted:
                item["deleted"] = "false"
            elif item["id"] == long_name:
                item["filename"] = "x" * 300 + ".jpg"
        return body

    return rewrite


# 1. Invalid feed items fail alone ---------------------------------------------------------

def test_invalid_feed_items_fail_alone_and_the_cursor_moves_past_them(ho, proxy, make_edge):
    ids = feed_ids(ho)
    bad_date, bad_deleted, long_name = ids[1], ids[6], ids[10]
    proxy.rewrite = corrupter(bad_date, bad_deleted, long_name)
    edge = make_edge(ho, ho_url=proxy.url, page_size=5)

    result, summary = edge.pull("incremental")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert summary["status"] == "partial", summary
    assert (summary["listed"], summary["downloaded"], summary["failed"]) == (
        COUNT + 1, COUNT - 3, 4), summary
    reasons = {f["photo_id"]: f["error"] for f in summary["failures"]}
    assert "updated_at" in reasons[bad_date]
    assert "deleted must be a JSON boolean" in reasons[bad_deleted]
    assert "filename is 304 characters long, more than 255" in reasons[long_name]
    raw = [key for key in reasons if key.startswith("'not-a-uuid")]
    assert len(raw) == 1 and len(raw[0]) <= 40, reasons
    assert "id must be a UUID" in reasons[raw[0]]
    held = edge.photos()
    assert len(held) == COUNT - 3 and not {bad_date, bad_deleted, long_name} & set(held)
    assert_no_bad_bytes(edge)
    # HO hears of each bad item whose id it can place.
    assert summary["report_pending"] == 0
    for photo_id, field in ((bad_date, "updated_at"), (bad_deleted, "deleted"),
                            (long_name, "filename")):
        at_ho = ho_status(ho, edge.store_id, photo_id)
        assert at_ho["status"] == "failed" and field in at_ho["error"], at_ho
    assert status_json(edge)["cursor"] is not None

    # The next run does not stop on the same pages: the cursor is past them.
    result, summary = edge.pull("incremental")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert (summary["listed"], summary["failed"]) == (0, 0), summary

    # Once HO sends them whole, a full run fetches them.
    proxy.rewrite = None
    result, summary = edge.pull("full")
    assert result.returncode == 0 and summary["downloaded"] == 3, summary
    assert_edge_matches_ho(edge, ho)


def test_invalid_feed_items_never_cost_the_store_its_photos(ho, proxy, make_edge):
    """A full run must not delete a held photo because HO described it badly, nor touch its
    bytes; it is marked failed until HO's item validates again."""
    edge = make_edge(ho, ho_url=proxy.url, page_size=5)
    result, summary = edge.pull("full")
    assert result.returncode == 0 and summary["downloaded"] == COUNT, summary
    before = edge.photos()

    ids = feed_ids(ho)
    proxy.rewrite = corrupter(ids[0], ids[5], ids[11])
    result, summary = edge.pull("full")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert (summary["failed"], summary["deleted"], summary["unchanged"]) == (4, 0, COUNT - 3)
    held = edge.photos()
    assert set(held) == set(before)
    for photo_id in (ids[0], ids[5], ids[11]):
        assert held[photo_id][2] == "failed" and held[photo_id][3] == before[photo_id][3]

    proxy.rewrite = None
    result, summary = edge.pull("full")
    assert result.returncode == 0 and summary["updated"] == 3, summary
    assert summary["downloaded"] == 0
    assert_edge_matches_ho(edge, ho)


@pytest.mark.parametrize("rewrite, message", [
    (lambda body: {**body, "photos": {"0": body["photos"]}}, "photos must be a list"),
    (lambda body: {**body, "has_more": "yes"}, "has_more must be a JSON boolean"),
    (lambda body: [body], "the page is a JSON list"),
], ids=["photos-not-a-list", "has-more-a-string", "page-a-list"])
def test_a_page_that_does_not_validate_stops_the_run_with_exit_4(ho, proxy, make_edge,
                                                                 rewrite, message):
    proxy.rewrite = rewrite
    edge = make_edge(ho, ho_url=proxy.url)
    result, summary = edge.pull("full")
    assert result.returncode == 4, (result.stdout, result.stderr)
    assert "photo list page that does not validate" in result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert edge.photos() == {} and status_json(edge)["cursor"] is None


# 2. Tombstones count against max_delete_fraction --------------------------------------------

def test_mass_delete_at_ho_is_refused_by_incremental_runs_until_forced(ho_stack, photo_factory,
                                                                       make_edge):
    ho = ho_stack("tombstones")
    ho.import_dir(photo_factory(10, seed=43, **SMALL))
    edge = make_edge(ho, page_size=4, max_delete_fraction=0.25)
    result, summary = edge.pull("full")
    assert result.returncode == 0 and summary["downloaded"] == 10, summary
    cursor = status_json(edge)["cursor"]

    doomed = feed_ids(ho)[:6]
    for photo_id in doomed:
        ho.cli("delete", photo_id)
    ho.import_dir(photo_factory(2, seed=44, **SMALL))  # new photos after the tombstones

    # The dry run refuses exactly where the real run will.
    result, dry = edge.pull("incremental", "--dry-run")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert dry["status"] == "refused" and dry["dry_run"] is True, dry
    assert "refusing to delete 6 of 10 photos" in dry["error"]
    assert (dry["deleted"], dry["downloaded"]) == (0, 2), dry

    for attempt in range(2):
        result, summary = edge.pull("incremental")
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert summary["status"] == "refused", summary
        # Against the photos held at run start: the second run holds the new ones too.
        assert ("refusing to delete 6 of 10 photos (60%" if attempt == 0 else
                "refusing to delete 6 of 12 photos (50%") in summary["error"], summary
        assert "--force-delete" in summary["error"]
        assert summary["deleted"] == 0
        # The new photos are written on the first attempt and unchanged on the second.
        assert (summary["downloaded"], summary["unchanged"]) == ((2, 0) if attempt == 0
                                                                 else (0, 2)), summary
        held = edge.photos()
        assert set(doomed) <= set(held) and len(held) == 12
        # No tombstone is lost: the cursor has not moved past them.
        assert status_json(edge)["cursor"] == cursor
        assert status_json(edge)["last_runs"][0]["status"] == "refused"
    plain = edge.cli("pull")
    assert plain.returncode == 1 and "refusing to delete 6 of 12 photos" in plain.stdout

    result, summary = edge.pull("incremental", "--force-delete", "--list-ids")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert summary["deleted"] == 6 and sorted(summary["ids"]["delete"]) == sorted(doomed)
    assert_edge_matches_ho(edge, ho)
    assert ho_status(ho, edge.store_id, doomed[0])["status"] == "deleted"
    result, summary = edge.pull("incremental")
    assert result.returncode == 0 and summary["listed"] == 0, summary


# 3. Bytes in flight -------------------------------------------------------------------------

@pytest.mark.parametrize("budget", [100_000, 1_000], ids=["budget-100kB", "below-one-photo"])
def test_bytes_in_flight_stay_within_the_budget(ho, proxy, make_edge, monkeypatch, budget):
    """The listed sizes of the downloads open at once never exceed the budget, and a photo
    larger than the whole budget still runs (alone)."""
    with ho.catalog() as conn:
        sizes = {r["id"]: r["size"] for r in conn.execute(
            "SELECT id::text AS id, size FROM product_photo WHERE deleted_at IS NULL")}
    assert min(sizes.values()) > 1_000 and sum(sizes.values()) > 3 * 100_000
    proxy.download_delay = 0.2  # downloads overlap, as on a real WAN
    edge = make_edge(ho, ho_url=proxy.url, concurrency=8, presigned="false")
    monkeypatch.setattr(engine, "IN_FLIGHT_BYTES", budget)
    summary = engine.run_sync(EdgeSettings.load(environ=edge.env), "full")
    assert summary.status == "ok" and summary.downloaded == COUNT, summary
    peak = proxy.peak_open
    if budget < min(sizes.values()):
        assert len(peak) == 1, peak
    else:
        assert sum(sizes[i] for i in peak) <= budget, [sizes[i] for i in peak]
        assert len(peak) >= 2, "downloads still run in parallel within the budget"
    assert_edge_matches_ho(edge, ho)
