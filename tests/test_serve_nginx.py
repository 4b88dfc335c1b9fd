"""The store's photo server as the edge role deploys it: nginx (the role's own site
template) in front of `photo-sync-edge serve`, over the photo mirror the real agent keeps
after each sync, against a store synced from a real HO. A mirrored photo is answered by
nginx alone with the photo server's own headers; everything else by the photo server."""

from __future__ import annotations

import hashlib
import subprocess
import uuid

import pytest
import requests

from support import disks, testbed
from support.gateway import nginx_missing
from support.mirror import catalog_ids, linked
from support.store_server import StoreNginx, photo_server

# What each answer is compared on (nginx adds Server, Date, Connection of its own).
SAME_200 = ("Content-Type", "Content-Length", "ETag", "Cache-Control", "Last-Modified")
SAME_304 = ("ETag", "Cache-Control")


@pytest.fixture(autouse=True)
def _need_nginx():
    why = nginx_missing()
    if why:
        pytest.skip(why)


def mirror_env(folder, max_bytes: int = 10**9, min_free: int = 0) -> dict:
    return {"PHOTO_SYNC_EDGE_SERVE_CACHE_DIR": str(folder),
            "PHOTO_SYNC_EDGE_SERVE_CACHE_MAX_BYTES": str(max_bytes),
            "PHOTO_SYNC_EDGE_SERVE_CACHE_MIN_FREE_BYTES": str(min_free)}


def sync(edge, mode: str = "incremental", **mirror) -> None:
    result, summary = edge.pull(mode, extra_env=mirror_env(**mirror))
    assert result.returncode == 0 and summary["failed"] == 0, result.stderr


def mirror_bytes(folder) -> int:
    return sum(p.stat().st_size for p in (folder / "objects").rglob("photo.*"))


def python_requests(front: "Front", photo_id: str) -> int:
    """How many requests for the photo reached the photo server (its access log). gunicorn
    logs a request after answering it: a marker request, waited for in the log, makes sure
    every earlier one is written."""
    marker = uuid.uuid4().hex
    requests.get(f"{front.python}/health?marker={marker}", timeout=10)

    def logs() -> str:
        return "".join(log.read_text() for log in front.root.glob("serve-*.log"))

    testbed.wait_for(lambda: marker in logs(), 10, "the photo server's access log")
    return logs().count(f"/photos/{photo_id}")


class Front:
    """The photo server and nginx in front of it, over one mirror."""

    def __init__(self, edge, root, mirror, host: str = "127.0.0.1"):
        self.edge, self.root, self.mirror, self.host = edge, root, mirror, host

    def __enter__(self):
        env = {**self.edge.env, "PHOTO_SYNC_EDGE_SERVE_CACHE_DIR": str(self.mirror)}
        self._serve = photo_server(env, self.root)
        self.python = self._serve.__enter__()
        self.nginx = StoreNginx(self.root / "nginx", self.mirror,
                                self.python.removeprefix("http://"), host=self.host).start()
        self.url = self.nginx.url
        return self

    def __exit__(self, *exc):
        self.nginx.stop()
        self._serve.__exit__(*exc)

    def both(self, path: str, **kwargs):
        """(nginx's answer, the photo server's own answer) to the same request."""
        kwargs = {"timeout": 10, "allow_redirects": False, **kwargs}
        return requests.get(self.url + path, **kwargs), requests.get(self.python + path,
                                                                     **kwargs)


def assert_same(front: Front, path: str, status: int, headers: dict | None = None) -> None:
    ours, theirs = front.both(path, headers=headers or {})
    assert (ours.status_code, theirs.status_code) == (status, status), path
    assert ours.content == theirs.content, path
    for name in (SAME_304 if status == 304 else SAME_200):
        assert ours.headers.get(name) == theirs.headers.get(name), (path, name)
    assert "Accept-Ranges" not in ours.headers


@pytest.fixture(scope="module")
def ho(ho_stack, photo_factory):
    stack = ho_stack("serve-nginx")
    stack.import_dir(photo_factory(8, seed=41, products=2, min_kb=5, max_kb=40, mean_kb=15))
    return stack


@pytest.fixture(scope="module")
def store(ho, make_edge, s3, tmp_path_factory):
    edge = make_edge(ho)
    edge.env["PHOTO_SYNC_EDGE_HO_IMAGE_BASE"] = (
        f"http://{s3.endpoint}/{ho.env['PHOTO_SYNC_HO_S3_BUCKET']}")
    edge.mirror = tmp_path_factory.mktemp("mirror") / "mirror"
    sync(edge, "full", folder=edge.mirror)
    return edge


def test_mirrored_photo_is_answered_by_nginx_as_the_photo_server_would(store, tmp_path):
    photos = store.photos()
    assert set(linked(store.mirror)) == set(photos)
    photo_id, (_, checksum, _, data) = sorted(photos.items())[0]
    with Front(store, tmp_path, store.mirror) as front:
        before = python_requests(front, photo_id)
        hit = requests.get(f"{front.url}/photos/{photo_id}", timeout=10)
        assert hit.status_code == 200 and hit.content == data
        assert hit.headers["ETag"] == f'"{checksum}"'
        assert hit.headers["Content-Type"] == "image/jpeg"
        assert hit.headers["Cache-Control"] == "public, max-age=60"
        v = checksum[:8]
        for path in (f"/photos/{photo_id}", f"/photos/{photo_id}?v={v}",
                     f"/photos/{photo_id}?v=00000000", f"/photos/{photo_id}?x=1&v={v}"):
            assert_same(front, path, 200)
        immutable = requests.get(f"{front.url}/photos/{photo_id}?v={v}", timeout=10)
        assert immutable.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        for tag in (f'"{checksum}"', f'W/"{checksum}"', f'"other", "{checksum}"', "*"):
            assert_same(front, f"/photos/{photo_id}", 304, {"If-None-Match": tag})
            assert_same(front, f"/photos/{photo_id}?v={v}", 304, {"If-None-Match": tag})
        assert_same(front, f"/photos/{photo_id}", 200, {"If-None-Match": '"0123"'})
        assert_same(front, f"/photos/{photo_id}", 200, {"If-None-Match": f'"{checksum}0"'})
        # Each request above asked nginx once and the photo server once: nginx never passed
        # one on.
        assert python_requests(front, photo_id) - before == 4 + 8 + 2

        # Everything else is the photo server's: its JSON 404s and its product listing.
        # Another spelling of the id is the photo server's to answer, the same way.
        assert_same(front, f"/photos/{photo_id.upper()}", 200)
        for path in (f"/photos/{uuid.uuid4()}", "/photos/not-a-uuid", "/nothing/here"):
            ours, theirs = front.both(path)
            assert ours.status_code == theirs.status_code, (path, ours.text)
            assert ours.json() == theirs.json(), (path, ours.text)
        head = requests.head(f"{front.url}/photos/{photo_id}", timeout=10)
        assert head.status_code == 200 and head.headers["ETag"] == f'"{checksum}"'
        post = requests.post(f"{front.url}/photos/{photo_id}", timeout=10)
        assert post.status_code == 405 and post.json()["error"]


def test_photo_without_bytes_redirects_to_ho_through_the_photo_server(ho, store, tmp_path):
    photo_id, (_, checksum, _, _) = sorted(store.photos().items())[1]
    # A row reset by a rollback (pending, bytes kept): the agent's next refresh drops it.
    with store.db() as conn:
        conn.execute("UPDATE product_photo SET sync_status = 'pending' WHERE id = %s",
                     (photo_id,))
    try:
        from photo_sync.edge.mirror import Mirror
        with store.db() as conn:
            Mirror(store.mirror, 10**9, 0).refresh(conn, "product_photo")
        assert photo_id not in linked(store.mirror)
        with Front(store, tmp_path, store.mirror) as front:
            ours, theirs = front.both(f"/photos/{photo_id}")
            assert ours.status_code == theirs.status_code == 302
            assert ours.headers["Location"] == theirs.headers["Location"]
            assert ours.headers["Location"].endswith(f"?v={checksum[:8]}")
            assert ours.headers["Cache-Control"] == "no-store"
    finally:
        with store.db() as conn:
            conn.execute("UPDATE product_photo SET sync_status = 'synced' WHERE id = %s",
                         (photo_id,))
        sync(store, folder=store.mirror)
    assert photo_id in linked(store.mirror)  # synced again: mirrored again


def test_replaced_and_deleted_photos_leave_the_mirror_at_the_next_sync(
        ho_stack, photo_factory, make_edge, tmp_path):
    ho = ho_stack("serve-nginx-change")
    folder = photo_factory(6, seed=43, products=2, min_kb=5, max_kb=20, mean_kb=10)
    ho.import_dir(folder)
    edge = make_edge(ho)
    mirror = tmp_path / "mirror"
    sync(edge, "full", folder=mirror)
    files = sorted(folder.rglob("*.jpg"))
    ids = catalog_ids(ho, files)
    replaced, deleted = files[0], files[1]
    old = edge.photos()[ids[replaced]][1]
    testbed.make_jpeg(replaced, 12 * 1024, seed=4300)
    new_bytes = replaced.read_bytes()
    ho.import_dir(folder)
    ho.cli("delete", ids[deleted])
    deleted_object = linked(mirror)[ids[deleted]]

    with Front(edge, tmp_path, mirror) as front:
        # Before the sync the store still holds the old bytes, and so does the mirror.
        assert requests.get(f"{front.url}/photos/{ids[replaced]}",
                            timeout=10).headers["ETag"] == f'"{old}"'
        sync(edge, folder=mirror)
        new = hashlib.md5(new_bytes).hexdigest()
        assert linked(mirror)[ids[replaced]] == f"{new}.jpg"
        assert not (mirror / "objects" / f"{old}.jpg").exists()
        assert ids[deleted] not in linked(mirror)
        assert not (mirror / "objects" / deleted_object).exists()
        fresh = requests.get(f"{front.url}/photos/{ids[replaced]}", timeout=10)
        assert fresh.content == new_bytes and fresh.headers["ETag"] == f'"{new}"'
        assert_same(front, f"/photos/{ids[replaced]}", 200)
        gone, theirs = front.both(f"/photos/{ids[deleted]}")
        assert gone.status_code == theirs.status_code == 404
        assert gone.json() == theirs.json() and gone.json()["error"] == "not_found"


def test_mirror_keeps_to_its_byte_budget_and_the_rest_is_still_served(
        ho, store, make_edge, tmp_path):
    edge = make_edge(ho)
    edge.env["PHOTO_SYNC_EDGE_HO_IMAGE_BASE"] = store.env["PHOTO_SYNC_EDGE_HO_IMAGE_BASE"]
    mirror = tmp_path / "mirror"
    sync(edge, "full", folder=mirror)
    photos = edge.photos()
    sizes = sorted(len(p[3]) for p in photos.values())
    budget = sum(sizes[:3])  # room for at most three photos
    sync(edge, folder=mirror, max_bytes=budget)
    kept = linked(mirror)
    assert 1 <= len(kept) <= 3 and mirror_bytes(mirror) <= budget
    assert len(list((mirror / "objects").glob("*.jpg"))) == len(kept)
    with Front(edge, tmp_path, mirror) as front:
        for photo_id, (_, checksum, _, data) in photos.items():
            assert_same(front, f"/photos/{photo_id}", 200)
            answer = requests.get(f"{front.url}/photos/{photo_id}?v={checksum[:8]}",
                                  timeout=10)
            assert answer.content == data
            assert answer.headers["Cache-Control"].endswith("immutable")
        outside = next(p for p in photos if p not in kept)
        before = python_requests(front, outside)
        requests.get(f"{front.url}/photos/{outside}", timeout=10)
        assert python_requests(front, outside) == before + 1  # a miss: the photo server


def test_mirror_never_takes_the_free_space_below_its_floor(ho, make_edge, tmp_path):
    disks.need_root()
    edge = make_edge(ho)
    disk = disks.SmallDisk(tmp_path / "disk", 2).mount()
    try:
        mirror = disk.folder / "mirror"
        floor = disk.free_bytes() - 60 * 1024  # room for a few photos, not all
        sync(edge, "full", folder=mirror, min_free=floor)
        photos = edge.photos()
        assert sum(len(p[3]) for p in photos.values()) > 60 * 1024
        kept = linked(mirror)
        assert 0 < len(kept) < len(photos)
        assert disk.free_bytes() >= floor
        # Something else fills the disk (the database's WAL, a log): the next sync gives
        # space back, oldest photos first, until the floor holds again.
        (disk.folder / "ballast").write_bytes(b"\0" * (disk.free_bytes() - floor + 20 * 1024))
        assert disk.free_bytes() < floor
        sync(edge, folder=mirror, min_free=floor)
        assert disk.free_bytes() >= floor and len(linked(mirror)) < len(kept)
        with Front(edge, tmp_path, mirror) as front:
            for photo_id, (_, checksum, _, data) in photos.items():
                answer = requests.get(f"{front.url}/photos/{photo_id}", timeout=10)
                assert answer.content == data and answer.headers["ETag"] == f'"{checksum}"'
    finally:
        subprocess.run(["umount", "-l", str(disk.folder)], check=False)


def test_bound_to_every_address_it_answers_on_loopback(store, tmp_path):
    photo_id, (_, checksum, _, data) = sorted(store.photos().items())[2]
    with Front(store, tmp_path, store.mirror, host="0.0.0.0") as front:
        assert front.url.startswith("http://127.0.0.1:")
        answer = requests.get(f"{front.url}/photos/{photo_id}", timeout=10)
        assert answer.content == data and answer.headers["ETag"] == f'"{checksum}"'
