"""Backups and restores under the sync (issue 19 part 2; docs/runbook-backups.md).

- A store restored from an older backup of its own database syncs forward with a plain
  incremental run: its cursor is older than HO's feed, so the feed brings every change
  since (new, changed, deleted photos) and nothing else.
- HO's catalog restored from an older backup: its change sequence goes back, and the
  store's cursor no longer means a place in HO's history. The agent notices (the cursor
  is beyond HO's `head_cursor`, or the catalog's `epoch` is not the one the cursor came
  from) and walks the whole catalog once, downloading only what differs.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from conftest import assert_edge_matches_ho, assert_no_bad_bytes
from support import disks, testbed


def _photo(folder: Path, product: int, name: str, kb: int, seed: int) -> Path:
    return testbed.make_jpeg(folder / str(uuid.UUID(int=product, version=4)) / name,
                             kb * 1024, seed)


def _set(folder: Path, names: list[str], seed: int) -> Path:
    """A folder with one product holding these photos (same names, other seed: new bytes)."""
    for index, name in enumerate(names):
        _photo(folder, 7, name, 25, seed * 100 + index)
    return folder


def _id_of(ho, filename: str) -> str:
    with ho.catalog() as conn:
        return str(conn.execute("SELECT id FROM product_photo WHERE filename = %s",
                                (filename,)).fetchone()["id"])


def _restart_on(ho, edge, restore) -> None:
    """Stop HO's API, run `restore` on its catalog, start it again; the store follows it
    to the new port."""
    ho.server.stop()
    restore()
    ho.server.start()
    edge.env["PHOTO_SYNC_EDGE_HO_URL"] = ho.url


def test_a_store_restored_from_last_weeks_backup_syncs_forward(ho_stack, make_edge, pg,
                                                               bed_root):
    """Store backup, then HO adds, changes and deletes photos and the store follows; the
    store database is restored from the backup: one incremental run brings it level with
    HO, downloading only the new and changed photos and deleting the deleted one."""
    ho = ho_stack("store-restore")
    root = bed_root / f"store-restore-{uuid.uuid4().hex[:8]}"
    ho.import_dir(_set(root / "photos", ["a.jpg", "b.jpg", "c.jpg"], seed=1))
    edge = make_edge(ho, max_delete_fraction=0.5)
    result, summary = edge.pull("full")
    assert result.returncode == 0 and summary["downloaded"] == 3, result.stderr
    backup = disks.dump(edge.database_url, root / "store.dump")

    _set(root / "photos", ["a.jpg"], seed=2)  # new bytes for a.jpg
    _photo(root / "photos", 7, "d.jpg", 25, 999)  # a new photo
    ho.import_dir(root / "photos")
    ho.cli("delete", _id_of(ho, "b.jpg"))
    result, summary = edge.pull("incremental")
    assert result.returncode == 0 and summary["downloaded"] == 2, (result.stderr, summary)

    disks.restore_fresh(pg.url(), edge.database_url, backup)
    assert len(edge.photos()) == 3  # last week's store: a, b, c at their old versions

    result, summary = edge.pull("incremental")
    assert result.returncode == 0, result.stderr
    assert (summary["downloaded"], summary["deleted"], summary["unchanged"]) == (2, 1, 0), summary
    assert summary["listed"] == 3, "the store walked more than the changes since its backup"
    assert_edge_matches_ho(edge, ho)


def test_ho_restored_in_place_the_store_notices_its_cursor_beyond_head(
        ho_stack, make_edge, bed_root):
    """HO's catalog restored in place from a dump taken before the store's last sync: the
    sequence goes back below the store's cursor, HO re-makes a change. The next incremental
    run sees its cursor beyond HO's head and re-lists the catalog: the re-made change and
    the photo HO has again arrive, the photos the restored HO never had go, the unchanged
    one is not downloaded again."""
    ho = ho_stack("ho-restore")
    root = bed_root / f"ho-restore-{uuid.uuid4().hex[:8]}"
    ho.import_dir(_set(root / "photos", ["a.jpg", "b.jpg", "c.jpg"], seed=1))
    edge = make_edge(ho, max_delete_fraction=0.9)  # the store registered before the backup
    backup = disks.dump(ho.database_url, root / "ho.dump")

    ho.import_dir(_set(root / "more", ["n1.jpg", "n2.jpg"], seed=3))
    ho.cli("delete", _id_of(ho, "c.jpg"))
    result, summary = edge.pull("full")
    assert result.returncode == 0 and summary["downloaded"] == 4, (result.stderr, summary)

    _restart_on(ho, edge, lambda: disks.restore_in_place(ho.database_url, backup))
    # HO re-makes a change after the restore: a.jpg gets new bytes (a lower change number
    # than the store's cursor).
    ho.import_dir(_set(root / "photos", ["a.jpg"], seed=4))

    result, summary = edge.pull("incremental")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "beyond the newest change" in result.stderr, result.stderr
    # a.jpg (re-made) and c.jpg (live again) downloaded, b.jpg unchanged, n1/n2 deleted.
    assert (summary["downloaded"], summary["unchanged"], summary["deleted"]) == (2, 1, 2), summary
    assert_edge_matches_ho(edge, ho)
    assert_no_bad_bytes(edge)

    # Back on track: the next incremental run continues the restored HO's feed.
    ho.import_dir(_set(root / "later", ["l1.jpg"], seed=5))
    result, summary = edge.pull("incremental")
    assert result.returncode == 0 and (summary["listed"], summary["downloaded"]) == (1, 1), \
        (result.stderr, summary)
    assert "beyond the newest change" not in result.stderr
    assert_edge_matches_ho(edge, ho)


def test_ho_restored_into_a_new_database_the_store_notices_the_epoch(
        ho_stack, make_edge, pg, bed_root):
    """HO's catalog restored into a new database, and HO has made more changes since than
    the restore took back, so its head is beyond the store's cursor again: only the epoch
    tells. The next incremental run re-lists and matches HO."""
    ho = ho_stack("ho-rebuilt")
    root = bed_root / f"ho-rebuilt-{uuid.uuid4().hex[:8]}"
    ho.import_dir(_set(root / "photos", ["a.jpg", "b.jpg", "c.jpg"], seed=1))
    edge = make_edge(ho, max_delete_fraction=0.9)
    backup = disks.dump(ho.database_url, root / "ho.dump")
    ho.import_dir(_set(root / "more", ["n1.jpg"], seed=3))
    result, summary = edge.pull("full")
    assert result.returncode == 0 and summary["downloaded"] == 4, (result.stderr, summary)

    _restart_on(ho, edge, lambda: disks.restore_fresh(pg.url(), ho.database_url, backup))
    # Three changes after the restore: the head passes the store's cursor.
    ho.import_dir(_set(root / "photos", ["a.jpg"], seed=4))
    ho.import_dir(_set(root / "other", ["m1.jpg", "m2.jpg"], seed=5))

    result, summary = edge.pull("incremental")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "epoch changed" in result.stderr, result.stderr
    # a.jpg, m1, m2 downloaded; b, c unchanged; n1 (never in the restored HO) deleted.
    assert (summary["downloaded"], summary["unchanged"], summary["deleted"]) == (3, 2, 1), summary
    assert_edge_matches_ho(edge, ho)
