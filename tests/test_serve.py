"""The store's photo server under real gunicorn, started the way an operator starts it
(`photo-sync-edge serve`), against a store synced from a real HO."""

from __future__ import annotations

import hashlib
import uuid

import pytest
import requests

from support.store_server import photo_server

@pytest.fixture(scope="module")
def ho(ho_stack, photo_factory):
    stack = ho_stack("serve")
    stack.import_dir(photo_factory(8, seed=31, products=2, min_kb=5, max_kb=40, mean_kb=15))
    return stack


@pytest.fixture(scope="module")
def store(ho, make_edge, s3):
    edge = make_edge(ho)
    result, _ = edge.pull("full")
    assert result.returncode == 0, result.stderr
    # What HO's image_url is built from when PUBLIC_IMAGE_BASE is not set.
    edge.env["PHOTO_SYNC_EDGE_HO_IMAGE_BASE"] = (
        f"http://{s3.endpoint}/{ho.env['PHOTO_SYNC_HO_S3_BUCKET']}")
    return edge


@pytest.fixture(scope="module", params=["database", "cache"])
def server(request, store, tmp_path_factory):
    """The photo server, once reading every photo from the database and once with the
    photo mirror the agent wrote after a sync (PHOTO_SYNC_EDGE_SERVE_CACHE_DIR): every
    test below holds both to the same answers."""
    root = tmp_path_factory.mktemp("serve")
    env = dict(store.env)
    if request.param == "cache":
        env["PHOTO_SYNC_EDGE_SERVE_CACHE_DIR"] = str(root / "mirror")
        result, _ = store.pull(extra_env={**mirror_env(root / "mirror")})
        assert result.returncode == 0, result.stderr
        assert len(list((root / "mirror" / "ids").iterdir())) == len(store.photos())
    with photo_server(env, root) as url:
        yield url


def mirror_env(folder, max_bytes: int = 10**9, min_free: int = 0) -> dict:
    """The agent's settings for a photo mirror in `folder`."""
    return {"PHOTO_SYNC_EDGE_SERVE_CACHE_DIR": str(folder),
            "PHOTO_SYNC_EDGE_SERVE_CACHE_MAX_BYTES": str(max_bytes),
            "PHOTO_SYNC_EDGE_SERVE_CACHE_MIN_FREE_BYTES": str(min_free)}


def ho_listing(ho, edge) -> dict:
    with ho.session(edge.store_id) as session:
        body = session.get(f"{ho.api}/sync/product-photos/", timeout=10,
                           params={"store_id": edge.store_id, "limit": 500}).json()
    return {p["id"]: p for p in body["photos"]}


def test_photo_bytes_and_caching_headers(store, server):
    photo_id, (_, checksum, _, data) = sorted(store.photos().items())[0]
    first = None
    for _ in range(2):  # twice: the same answer each time
        response = requests.get(f"{server}/photos/{photo_id}", timeout=10)
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["Content-Type"] == "image/jpeg"
        assert response.headers["Content-Length"] == str(len(data))
        assert response.headers["ETag"] == f'"{checksum}"'
        assert response.headers["Last-Modified"]
        assert response.headers["Cache-Control"] == "public, max-age=60"
        first = first or response.headers["Last-Modified"]
        assert response.headers["Last-Modified"] == first

    versioned = requests.get(f"{server}/photos/{photo_id}?v={checksum[:8]}", timeout=10)
    assert versioned.content == data
    assert versioned.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    outdated = requests.get(f"{server}/photos/{photo_id}?v=00000000", timeout=10)
    assert outdated.content == data
    assert outdated.headers["Cache-Control"] == "public, max-age=60"

    for tag in (f'"{checksum}"', f'W/"{checksum}"', f'"other", "{checksum}"'):
        cached = requests.get(f"{server}/photos/{photo_id}", timeout=10,
                              headers={"If-None-Match": tag})
        assert cached.status_code == 304 and cached.content == b"", tag
        assert cached.headers["ETag"] == f'"{checksum}"'
    changed = requests.get(f"{server}/photos/{photo_id}", timeout=10,
                           headers={"If-None-Match": '"0123"'})
    assert changed.status_code == 200 and changed.content == data


@pytest.mark.parametrize("path", ["/photos/{unknown}", "/photos/not-a-uuid", "/photos/%00",
                                  "/products/not-a-uuid/photos", "/nothing/here"])
def test_unknown_or_malformed_ids_get_json_404(server, path):
    response = requests.get(server + path.format(unknown=uuid.uuid4()), timeout=10)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"] and "detail" in response.json()


def test_product_photos_in_display_order_with_working_urls(store, server):
    held = store.photos()
    with store.db() as conn:
        product_id = conn.execute("SELECT product_id FROM product_photo GROUP BY 1 "
                                  "ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
        rows = conn.execute("SELECT id::text, is_primary, sort_order FROM product_photo "
                            "WHERE product_id = %s", (product_id,)).fetchall()
    # Make the order non-trivial: the primary photo sorts last by sort_order.
    with store.db() as conn:
        for index, (photo_id, _, _) in enumerate(sorted(rows)):
            conn.execute("UPDATE product_photo SET sort_order = %s, is_primary = %s WHERE id = %s",
                         (len(rows) - index, index == 0, photo_id))
    body = requests.get(f"{server}/products/{product_id}/photos", timeout=10).json()
    ids = [p["id"] for p in body["photos"]]
    ordered = sorted(r[0] for r in rows)
    assert len(ordered) >= 3
    # Primary first, then ascending sort_order (which runs against the id order here).
    assert ids == [ordered[0], *reversed(ordered[1:])]
    assert body["photos"][0]["is_primary"] is True
    for item in body["photos"]:
        checksum, data = held[item["id"]][1], held[item["id"]][3]
        assert item["url"] == f"/photos/{item['id']}?v={checksum[:8]}"
        response = requests.get(server + item["url"], timeout=10)
        assert hashlib.md5(response.content).hexdigest() == checksum and response.content == data
        assert response.headers["Cache-Control"].endswith("immutable")
    empty = requests.get(f"{server}/products/{uuid.uuid4()}/photos", timeout=10)
    assert empty.status_code == 200 and empty.json()["photos"] == []


def test_photo_without_bytes_redirects_to_hos_image_url(ho, store, server):
    photo_id = sorted(store.photos())[1]
    listing = ho_listing(ho, store)
    with store.db() as conn:
        conn.execute("UPDATE product_photo SET sync_status = 'pending' WHERE id = %s", (photo_id,))
    try:
        response = requests.get(f"{server}/photos/{photo_id}", timeout=10, allow_redirects=False)
        assert response.status_code == 302
        assert response.headers["Location"] == listing[photo_id]["image_url"]
        assert response.headers["Cache-Control"] == "no-store"
    finally:
        with store.db() as conn:
            conn.execute("UPDATE product_photo SET sync_status = 'synced' WHERE id = %s",
                         (photo_id,))


def test_read_only_role_serves_and_health_tracks_the_database(ho, store, pg, tmp_path):
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with store.db() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT ON product_photo TO {role}")
    db_name = store.database_url.rsplit("/", 1)[1]
    env = {**store.env, "PHOTO_SYNC_EDGE_DATABASE_URL":
           f"postgresql://{role}@127.0.0.1:{pg.port}/{db_name}"}
    photo_id, (_, _, _, data) = sorted(store.photos().items())[2]
    with photo_server(env, tmp_path) as url:
        assert requests.get(f"{url}/health", timeout=10).json() == {"status": "ok"}
        assert requests.get(f"{url}/photos/{photo_id}", timeout=10).content == data

    down = {**store.env, "PHOTO_SYNC_EDGE_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}
    with photo_server(down, tmp_path, wait_healthy=False) as url:
        health = requests.get(f"{url}/health", timeout=30)
        assert health.status_code == 503 and health.json()["error"] == "database_unavailable"
        photo = requests.get(f"{url}/photos/{photo_id}", timeout=30)
        assert photo.status_code == 503 and photo.json()["error"] == "database_unavailable"


def test_mirrored_photo_is_never_stale_nor_a_wrong_file(store, tmp_path):
    """The mirror only speeds answers up: a photo whose bytes changed in the database is
    answered with the new bytes at once (before any sync rewrites the mirror); a file of
    the wrong length under the right name is not served; the server never writes the
    mirror (only the agent does, within its budget)."""
    mirror = tmp_path / "mirror"
    photo_id, (_, checksum, _, data) = sorted(store.photos().items())[3]
    result, _ = store.pull(extra_env=mirror_env(mirror))
    assert result.returncode == 0, result.stderr
    mirrored = mirror / "objects" / f"{checksum}.jpg" / "photo.jpg"
    assert mirrored.read_bytes() == data
    env = {**store.env, "PHOTO_SYNC_EDGE_SERVE_CACHE_DIR": str(mirror)}
    new = data[:-10] + b"0123456789"  # what a later sync could write
    new_md5 = hashlib.md5(new).hexdigest()
    try:
        with photo_server(env, tmp_path) as url:
            assert requests.get(f"{url}/photos/{photo_id}", timeout=10).content == data

            with store.db() as conn:
                conn.execute("UPDATE product_photo SET image_binary = %s, checksum = %s "
                             "WHERE id = %s", (new, new_md5, photo_id))
            fresh = requests.get(f"{url}/photos/{photo_id}", timeout=10)
            assert fresh.content == new and fresh.headers["ETag"] == f'"{new_md5}"'
            assert not (mirror / "objects" / f"{new_md5}.jpg").exists()  # not written

            # Someone truncated a mirrored file: its length gives it away.
            with store.db() as conn:
                conn.execute("UPDATE product_photo SET image_binary = %s, checksum = %s "
                             "WHERE id = %s", (data, checksum, photo_id))
            mirrored.write_bytes(data[:100])
            again = requests.get(f"{url}/photos/{photo_id}", timeout=10)
            assert again.content == data and again.headers["ETag"] == f'"{checksum}"'
    finally:
        with store.db() as conn:
            conn.execute("UPDATE product_photo SET image_binary = %s, checksum = %s "
                         "WHERE id = %s", (data, checksum, photo_id))
