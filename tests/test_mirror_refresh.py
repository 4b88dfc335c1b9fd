"""The photo mirror after each sync run of the real agent (`photo-sync-edge -v pull`): a run
that changed nothing reads no row and rewrites no file, a run that changed photos reads only
those rows and swaps only their files, and a mirror wiped behind the agent's back is rebuilt
by the next run even when the run changed nothing. What the refresh did is read from the
agent's own log line (`photo mirror: ... N rows read (walk: ...)`)."""

from __future__ import annotations

import hashlib
import re
import shutil
import uuid

import pytest

from photo_sync.edge.mirror import Mirror
from support import testbed
from support.mirror import catalog_ids, linked

LINE = re.compile(r"photo mirror: (\d+) photos \((\d+) bytes\), (\d+) written, (\d+) removed, "
                  r".*; (\d+) rows read \(walk: (\w+)\)")


def pull(edge, mirror, mode: str = "incremental") -> dict:
    """One verbose pull with the mirror in `mirror`; what its mirror log line says."""
    result = edge.cli("-v", "pull", "--mode", mode, "--json", extra_env={
        "PHOTO_SYNC_EDGE_SERVE_CACHE_DIR": str(mirror),
        "PHOTO_SYNC_EDGE_SERVE_CACHE_MAX_BYTES": str(10**9),
        "PHOTO_SYNC_EDGE_SERVE_CACHE_MIN_FREE_BYTES": "0"})
    assert result.returncode == 0, result.stderr
    assert '"ids": null' in result.stdout  # not asked for: the summary stays as it was
    found = LINE.findall(result.stderr)
    assert len(found) == 1, result.stderr
    photos, nbytes, written, removed, rows, walk = found[0]
    return {"photos": int(photos), "bytes": int(nbytes), "written": int(written),
            "removed": int(removed), "rows_read": int(rows), "walk": walk}


def stamps(mirror) -> dict:
    """The mtime of every link, object file and folder of the mirror (links not followed)."""
    return {str(p.relative_to(mirror)): p.lstat().st_mtime_ns
            for p in [mirror / "ids", mirror / "objects", *mirror.rglob("*")]
            if not p.name.startswith(".")}


@pytest.fixture
def bed(ho_stack, photo_factory, make_edge, tmp_path):
    """A store synced in full from its own HO, its mirror written by that run."""
    ho = ho_stack(f"mirror-refresh-{uuid.uuid4().hex[:6]}")
    folder = photo_factory(6, seed=47, products=2, min_kb=5, max_kb=20, mean_kb=10)
    ho.import_dir(folder)
    edge = make_edge(ho)
    mirror = tmp_path / "mirror"
    first = pull(edge, mirror, "full")
    assert first["walk"] == "full" and first["rows_read"] == first["photos"] == 6
    assert set(linked(mirror)) == set(edge.photos())
    return ho, folder, edge, mirror


def test_a_run_that_changed_nothing_reads_no_row_and_rewrites_no_file(bed):
    _, _, edge, mirror = bed
    before = stamps(mirror)
    for _ in range(2):
        again = pull(edge, mirror)
        assert again == {"photos": 6, "bytes": sum(len(p[3]) for p in edge.photos().values()),
                         "written": 0, "removed": 0, "rows_read": 0, "walk": "none"}
    assert stamps(mirror) == before


def test_a_changed_photo_is_replaced_by_the_next_incremental_run(bed):
    ho, folder, edge, mirror = bed
    files = sorted(folder.rglob("*.jpg"))
    ids = catalog_ids(ho, files)
    replaced, deleted = files[0], files[1]
    old = linked(mirror)[ids[replaced]]
    deleted_object = linked(mirror)[ids[deleted]]
    untouched = {k: v for k, v in stamps(mirror).items()
                 if old not in k and deleted_object not in k
                 and k not in ("ids", "objects", f"ids/{ids[replaced]}", f"ids/{ids[deleted]}")}
    testbed.make_jpeg(replaced, 12 * 1024, seed=4700)
    ho.import_dir(folder)
    ho.cli("delete", ids[deleted])

    after = pull(edge, mirror)
    # Only the two changed rows were looked up (the deleted one is no longer there).
    assert after["walk"] == "changed" and after["rows_read"] == 1
    assert (after["photos"], after["written"], after["removed"]) == (5, 1, 2)
    new = hashlib.md5(replaced.read_bytes()).hexdigest()
    assert linked(mirror)[ids[replaced]] == f"{new}.jpg"
    assert (mirror / "objects" / f"{new}.jpg" / "photo.jpg").read_bytes() == \
        replaced.read_bytes()
    assert not (mirror / "objects" / old).exists()
    assert ids[deleted] not in linked(mirror)
    assert not (mirror / "objects" / deleted_object).exists()
    assert after["bytes"] == sum(len(p[3]) for p in edge.photos().values())
    now = stamps(mirror)
    assert {k: now[k] for k in untouched} == untouched  # the other photos' files stay
    # And the next run, which changes nothing, agrees with a full walk's count.
    assert pull(edge, mirror) == {**after, "written": 0, "removed": 0, "rows_read": 0,
                                  "walk": "none"}


def test_a_wiped_mirror_is_rebuilt_by_the_next_run_that_changed_nothing(bed):
    _, _, edge, mirror = bed
    photos = edge.photos()
    # The whole cache dir removed (a fresh disk, an operator's rm -rf).
    shutil.rmtree(mirror)
    rebuilt = pull(edge, mirror)
    assert rebuilt["walk"] == "full" and rebuilt["written"] == 6
    assert set(linked(mirror)) == set(photos)
    # One object removed behind the agent's back: the record no longer matches the folder.
    victim, name = sorted(linked(mirror).items())[0]
    shutil.rmtree(mirror / "objects" / name)
    mended = pull(edge, mirror)
    assert mended["walk"] == "full" and mended["written"] == 1
    assert (mirror / "objects" / name / "photo.jpg").read_bytes() == photos[victim][3]
    assert pull(edge, mirror)["walk"] == "none"


def test_unknown_changes_and_a_change_over_the_budget_walk_the_table(bed):
    _, _, edge, mirror = bed
    photos = edge.photos()
    total = sum(len(p[3]) for p in photos.values())

    def connect():
        return edge.db()
    # The agent's record, with a budget the mirror fills exactly.
    first = Mirror(mirror, total, 0).refresh_changed(connect, "product_photo", None)
    assert (first.walk, first.rows_read, first.bytes) == ("full", 6, total)
    assert Mirror(mirror, total, 0).refresh_changed(connect, "product_photo", set()).walk == \
        "none"
    # A run that could not name what it changed: every held row again.
    assert Mirror(mirror, total, 0).refresh_changed(connect, "product_photo", None).walk == \
        "full"
    # One photo grows past what the budget has room for: only the walk knows which photos
    # are the newest, so it decides, and the budget holds.
    grown_id = sorted(photos)[0]
    data = testbed.make_jpeg(mirror.parent / "grown.jpg", 30 * 1024, seed=4701).read_bytes()
    with edge.db() as conn:
        conn.execute("UPDATE product_photo SET image_binary = %s, checksum = %s, "
                     "updated_at = now() WHERE id = %s",
                     (data, hashlib.md5(data).hexdigest(), grown_id))
    after = Mirror(mirror, total, 0).refresh_changed(connect, "product_photo",
                                                     {uuid.UUID(grown_id)})
    assert after.walk == "full" and after.skipped_for_budget >= 1
    assert after.bytes <= total
    assert linked(mirror)[grown_id] == f"{hashlib.md5(data).hexdigest()}.jpg"  # the newest
