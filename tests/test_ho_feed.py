"""The change feed does not lose a change while HO keeps importing and deleting.

Stores walk the cursor feed in small pages while a writer imports changed
bytes, adds photos and deletes photos; once the writer stops and the stores
catch up, what each store rebuilt from the feed is exactly the live catalog.
Legacy offset paging, by contrast, skips a row when the catalog changes
between two pages, which is why the cursor exists.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from support import testbed
from photo_sync.ho import catalog
from photo_sync.ho.importer import import_directory
from photo_sync.ho.settings import HOSettings
from photo_sync.ho.storage import Storage


class Writer:
    """HO-side changes through the importer and catalog code the CLI runs, in-process so a
    thread can make many of them while stores read."""

    def __init__(self, ho, folder: Path):
        settings = HOSettings.load(environ=ho.env, need_jwt=False)
        self.storage = Storage.from_settings(settings)
        self.conn = catalog.connect(ho.database_url, autocommit=True)
        self.folder = folder
        self.rng = random.Random(20260203)
        self.seeds = itertools.count(10_000)
        self.changed = 0
        self.added = 0
        self.deleted: set[str] = set()

    def sync(self):
        return import_directory(self.conn, self.storage, self.folder, workers=2)

    def file_of(self, photo_id: str) -> Path:
        row = catalog.get_photo(self.conn, uuid.UUID(photo_id))
        return self.folder / str(row["product_id"]) / row["filename"]

    def change(self, photo_id: str) -> None:
        testbed.make_jpeg(self.file_of(photo_id), 5_000, seed=next(self.seeds))
        self.changed += 1

    def add(self) -> None:
        product = self.rng.choice([p for p in self.folder.iterdir() if p.is_dir()])
        seed = next(self.seeds)
        testbed.make_jpeg(product / f"new-{seed}.jpg", 5_000, seed=seed)
        self.added += 1

    def delete(self, photo_id: str, linger: float = 0.0) -> None:
        path = self.file_of(photo_id)
        with self.conn.transaction():
            assert catalog.mark_deleted(self.conn, uuid.UUID(photo_id)) is not None
            # A transaction that commits late: the changes other writers commit meanwhile
            # must not let a store's cursor move past this one.
            time.sleep(linger)
        path.unlink()  # or the next import would bring it back
        self.deleted.add(photo_id)

    def live(self) -> dict[str, tuple[int, str]]:
        rows = self.conn.execute("SELECT id, version, checksum FROM product_photo "
                                 "WHERE deleted_at IS NULL").fetchall()
        return {str(row["id"]): (row["version"], row["checksum"]) for row in rows}

    def run(self, rounds: int) -> None:
        """Each round: new bytes for two photos, one new photo, one deletion."""
        for _ in range(rounds):
            for photo_id in self.rng.sample(self.own_ids(), 2):
                self.change(photo_id)
            self.add()
            self.sync()
            self.delete(self.rng.choice(self.own_ids()))

    def delete_some(self, count: int) -> None:
        """Delete photos in slow transactions, spread over another writer's imports."""
        for photo_id in self.rng.sample(self.own_ids(), count):
            self.delete(photo_id, linger=self.rng.uniform(0.03, 0.1))
            time.sleep(self.rng.uniform(0.01, 0.05))

    def own_ids(self) -> list[str]:
        """The live photos imported from this writer's folder."""
        products = [p.name for p in self.folder.iterdir() if p.is_dir()]
        rows = self.conn.execute("SELECT id FROM product_photo WHERE deleted_at IS NULL "
                                 "AND product_id = ANY(%s::uuid[]) ORDER BY id",
                                 (products,)).fetchall()
        return [str(row["id"]) for row in rows]


@pytest.fixture(scope="module")
def ho(ho_stack):
    return ho_stack("feed", workers=2, threads=8)


@pytest.fixture(scope="module")
def writer(ho, photo_factory):
    """Imports changed and new photos and deletes some, in its own folder."""
    w = Writer(ho, photo_factory(20, seed=41, products=6, min_kb=4, max_kb=8, mean_kb=5))
    w.sync()
    yield w
    w.conn.close()


@pytest.fixture(scope="module")
def deleter(ho, photo_factory):
    """Deletes photos of its own folder, concurrently with `writer`'s imports."""
    w = Writer(ho, photo_factory(12, seed=43, products=4, min_kb=4, max_kb=8, mean_kb=5))
    w.sync()
    yield w
    w.conn.close()


@dataclass
class StoreView:
    """What a store rebuilds from the feed: photo id -> (version, checksum)."""

    state: dict[str, tuple[int, str]] = field(default_factory=dict)
    tombstones: set[str] = field(default_factory=set)
    versions_seen: dict[str, list[int]] = field(default_factory=dict)
    pages: int = 0
    pages_while_writing: int = 0

    def apply(self, photo: dict) -> None:
        self.versions_seen.setdefault(photo["id"], []).append(photo["version"])
        if photo["deleted"]:
            self.state.pop(photo["id"], None)
            self.tombstones.add(photo["id"])
        else:
            self.state[photo["id"]] = (photo["version"], photo["checksum"])


def follow_feed(session: requests.Session, api: str, limit: int, first_page: dict,
                writes_done: threading.Event) -> StoreView:
    """Apply the first page, then follow next_cursor until the writer is done and a page
    requested after that comes back empty with has_more false."""
    view = StoreView()
    for photo in first_page["photos"]:
        view.apply(photo)
    cursor = first_page["next_cursor"]
    while view.pages < 10_000:  # a feed that never ends fails the test instead of hanging it
        done_before = writes_done.is_set()
        page = session.get(f"{api}/sync/product-photos/",
                           params={"limit": limit, "cursor": cursor}, timeout=30)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["photos"]) <= limit
        view.pages += 1
        view.pages_while_writing += not done_before
        for photo in body["photos"]:
            view.apply(photo)
        if body["photos"]:
            assert body["next_cursor"] != cursor
        cursor = body["next_cursor"]
        if done_before and not body["has_more"] and not body["photos"]:
            return view
        if not body["photos"]:
            writes_done.wait(0.02)  # caught up while HO is still writing: poll again
    raise AssertionError(f"the feed did not end after {view.pages} pages")


def test_cursor_feed_misses_nothing_while_ho_imports_and_deletes(ho, writer, deleter):
    store_id, _ = ho.add_store("feed-reader")
    limits = (3, 4, 5)
    sessions = [ho.session(store_id) for _ in limits]
    # Each store starts the way an edge does: a first page without a cursor.
    first_pages = [s.get(f"{ho.api}/sync/product-photos/", params={"limit": limit}).json()
                   for s, limit in zip(sessions, limits)]
    before = (writer.changed, writer.added, len(writer.deleted) + len(deleter.deleted),
              len(writer.live()))
    writes_done = threading.Event()

    def write() -> None:
        try:
            with ThreadPoolExecutor(max_workers=2) as pool:
                jobs = [pool.submit(writer.run, 12), pool.submit(deleter.delete_some, 8)]
                for job in jobs:
                    job.result()
        finally:
            writes_done.set()

    with ThreadPoolExecutor(max_workers=len(limits) + 1) as pool:
        writing = pool.submit(write)
        readers = [pool.submit(follow_feed, s, ho.api, limit, first, writes_done)
                   for s, limit, first in zip(sessions, limits, first_pages)]
        writing.result()
        views = [reader.result() for reader in readers]

    live = writer.live()
    deleted = writer.deleted | deleter.deleted
    made = (writer.changed, writer.added, len(deleted), len(live))
    # 24 new bytes, 12 new photos, 12 + 8 deletions, all imported and deleted while stores read.
    assert tuple(a - b for a, b in zip(made, before)) == (24, 12, 20, -8)
    assert any(version >= 2 for version, _ in live.values())
    for limit, view in zip(limits, views):
        assert view.pages_while_writing > 0, f"limit {limit}: the walk did not overlap the writes"
        assert view.state == live, f"limit {limit}: the store's photos differ from HO's"
        # Every deletion HO made reached the store as a tombstone.
        assert view.tombstones == deleted
        # A photo's version never goes backwards along the feed.
        for photo_id, versions in view.versions_seen.items():
            assert versions == sorted(versions), photo_id


def test_legacy_offset_paging_skips_a_row_that_the_cursor_keeps(ho, writer):
    store_id, _ = ho.add_store("offset-reader")
    client = ho.session(store_id)
    url = f"{ho.api}/sync/product-photos/"
    order = [p["id"] for p in client.get(url, params={"limit": 500}).json()["photos"]]
    assert len(order) >= 6

    first = client.get(url, params={"limit": 3}).json()
    assert [p["id"] for p in first["photos"]] == order[:3]
    # HO changes a photo the store has already paged past: it moves to the end of the
    # change order and every later photo moves up one place.
    writer.change(order[0])
    assert writer.sync().updated == 1

    offset_seen = {p["id"] for p in first["photos"]}
    offset = first["next_offset"]
    while offset is not None:
        page = client.get(url, params={"limit": 3, "offset": offset}).json()
        offset_seen |= {p["id"] for p in page["photos"]}
        offset = page["next_offset"]
    assert order[3] not in offset_seen, "offset paging no longer skips; update this test"

    view = StoreView()
    for photo in first["photos"]:
        view.apply(photo)
    cursor = first["next_cursor"]
    while True:
        page = client.get(url, params={"limit": 3, "cursor": cursor}).json()
        for photo in page["photos"]:  # tombstones from earlier deletions come too
            view.apply(photo)
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert set(view.state) == set(order)
    assert view.state[order[0]] == writer.live()[order[0]]
