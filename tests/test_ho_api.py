"""The HO sync API contract, through real HTTP to gunicorn, a real catalog and real S3.

Token, photo listing (offset, since, cursor), download with its headers and
conditional GET, status reports as recorded in the catalog, health, the
OpenAPI document; a 20 MB photo streamed without the worker holding it; and
what a store sees while S3 is down.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import jwt
import psutil
import pytest
import requests

from support import testbed

BIN = Path(sys.executable).parent
MB = 1024 * 1024
PHOTO_FIELDS = {"id", "product_id", "object_key", "filename", "size", "content_type", "checksum",
                "checksum_sha256", "version", "is_primary", "sort_order", "updated_at",
                "image_url", "deleted"}


def assert_error(response: requests.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body.get("error"), str) and isinstance(body.get("detail"), str), body
    if code:
        assert body["error"] == code
    return body


def source_files(folder: Path) -> dict[tuple[str, str], Path]:
    """(product_id, filename) -> the file imported from `folder` (one folder per product)."""
    return {(p.parent.name, p.name): p for p in folder.rglob("*.jpg")}


@pytest.fixture(scope="module")
def ho(ho_stack, photo_factory):
    stack = ho_stack("api")
    folder = photo_factory(6, seed=11, products=3, min_kb=8, max_kb=30, mean_kb=15)
    stack.import_dir(folder)
    stack.files = source_files(folder)
    stack.store_a, _ = stack.add_store("store-a")
    stack.store_b, _ = stack.add_store("store-b")
    return stack


@pytest.fixture(scope="module")
def client(ho):
    return ho.session(ho.store_a)


@pytest.fixture(scope="module")
def photos(ho, client):
    page = client.get(f"{ho.api}/sync/product-photos/").json()
    return page["photos"]


def test_token_exchanges_store_credentials_for_a_bearer_jwt(ho):
    response = requests.post(f"{ho.api}/auth/token/", timeout=10,
                             json={"store_id": ho.store_a, "secret": ho.stores[ho.store_a]})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    claims = jwt.decode(body["access"], ho.env["PHOTO_SYNC_HO_JWT_SECRET"], algorithms=["HS256"],
                        audience="photo-sync-edge")
    assert claims["sub"] == ho.store_a
    assert claims["exp"] - claims["iat"] == body["expires_in"]


def test_token_refuses_a_wrong_secret(ho):
    response = requests.post(f"{ho.api}/auth/token/", timeout=10,
                             json={"store_id": ho.store_a, "secret": ho.stores[ho.store_b]})
    assert_error(response, 401, "invalid_credentials")


def test_list_describes_every_imported_photo(ho, client, photos):
    page = client.get(f"{ho.api}/sync/product-photos/").json()
    assert page["total"] == 6
    assert page["has_more"] is False
    assert page["next_offset"] is None
    assert isinstance(page["next_cursor"], str) and page["next_cursor"]
    assert len(photos) == 6
    assert {(p["product_id"], p["filename"]) for p in photos} == set(ho.files)
    for photo in photos:
        assert set(photo) == PHOTO_FIELDS
        data = ho.files[(photo["product_id"], photo["filename"])].read_bytes()
        uuid.UUID(photo["id"])
        assert photo["size"] == len(data)
        assert photo["content_type"] == "image/jpeg"
        assert photo["checksum"] == hashlib.md5(data).hexdigest()
        assert photo["checksum_sha256"] == hashlib.sha256(data).hexdigest()
        assert photo["version"] == 1
        assert photo["deleted"] is False
        assert photo["filename"] in photo["object_key"]
        assert photo["image_url"].endswith(f"/{photo['object_key']}?v={photo['checksum'][:8]}")
        assert photo["image_url"].startswith("http")
        assert dt.datetime.fromisoformat(photo["updated_at"]).tzinfo is not None
        assert isinstance(photo["is_primary"], bool) and isinstance(photo["sort_order"], int)


def test_each_product_has_exactly_one_primary_photo(photos):
    primaries: dict[str, int] = {}
    for photo in photos:
        primaries[photo["product_id"]] = primaries.get(photo["product_id"], 0) + photo["is_primary"]
    assert len(primaries) == 3
    assert set(primaries.values()) == {1}


def test_offset_paging_covers_every_photo_once(ho, client, photos):
    first = client.get(f"{ho.api}/sync/product-photos/", params={"limit": 4}).json()
    assert (len(first["photos"]), first["total"], first["has_more"], first["next_offset"]) \
        == (4, 6, True, 4)
    second = client.get(f"{ho.api}/sync/product-photos/",
                        params={"limit": 4, "offset": first["next_offset"]}).json()
    assert (len(second["photos"]), second["total"], second["has_more"], second["next_offset"]) \
        == (2, 6, False, None)
    ids = [p["id"] for p in first["photos"] + second["photos"]]
    assert sorted(ids) == sorted(p["id"] for p in photos)
    beyond = client.get(f"{ho.api}/sync/product-photos/", params={"offset": 6}).json()
    assert beyond["photos"] == [] and beyond["has_more"] is False


def test_cursor_paging_covers_every_photo_once_and_ends_with_an_empty_page(ho, client, photos):
    first = client.get(f"{ho.api}/sync/product-photos/", params={"limit": 4}).json()
    second = client.get(f"{ho.api}/sync/product-photos/",
                        params={"limit": 4, "cursor": first["next_cursor"]}).json()
    assert len(second["photos"]) == 2
    assert second["has_more"] is False
    assert second["total"] == 2  # what is left after the cursor
    assert second["next_offset"] is None
    ids = [p["id"] for p in first["photos"] + second["photos"]]
    assert sorted(ids) == sorted(p["id"] for p in photos)
    caught_up = client.get(f"{ho.api}/sync/product-photos/",
                           params={"limit": 4, "cursor": second["next_cursor"]}).json()
    assert caught_up["photos"] == [] and caught_up["has_more"] is False
    assert caught_up["total"] == 0
    # Nothing changed: the client may keep polling with the same cursor.
    assert caught_up["next_cursor"] == second["next_cursor"]


def test_since_lists_photos_changed_at_or_after_a_time(ho, client, photos):
    changed = {p["id"]: dt.datetime.fromisoformat(p["updated_at"]) for p in photos}
    latest = max(changed.values())
    expected = sorted(photo_id for photo_id, at in changed.items() if at == latest)
    at = client.get(f"{ho.api}/sync/product-photos/", params={"since": latest.isoformat()}).json()
    assert sorted(p["id"] for p in at["photos"]) == expected
    assert at["total"] == len(expected)
    later = latest + dt.timedelta(microseconds=1)
    after = client.get(f"{ho.api}/sync/product-photos/",
                       params={"since": later.isoformat()}).json()
    assert (after["photos"], after["total"], after["has_more"]) == ([], 0, False)
    everything = client.get(f"{ho.api}/sync/product-photos/",
                            params={"since": "2000-01-01T00:00:00Z", "limit": 5}).json()
    assert (everything["total"], len(everything["photos"]), everything["next_offset"]) == (6, 5, 5)


def test_download_returns_the_imported_bytes_with_checksum_and_version(ho, client, photos):
    for photo in photos:
        data = ho.files[(photo["product_id"], photo["filename"])].read_bytes()
        response = client.get(f"{ho.api}/sync/product-photos/{photo['id']}/download/",
                              params={"store_id": ho.store_a})
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["Content-Type"] == "image/jpeg"
        assert response.headers["Content-Length"] == str(len(data))
        assert response.headers["X-Checksum"] == hashlib.md5(data).hexdigest() == photo["checksum"]
        assert response.headers["X-Checksum-SHA256"] == hashlib.sha256(data).hexdigest()
        assert response.headers["X-Version"] == "1"
        assert response.headers["ETag"] == f'"{photo["checksum"]}"'


def test_download_honours_if_none_match(ho, client, photos):
    url = f"{ho.api}/sync/product-photos/{photos[0]['id']}/download/"
    etag = client.get(url).headers["ETag"]
    not_modified = client.get(url, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["ETag"] == etag
    assert not_modified.headers["X-Version"] == "1"
    stale = client.get(url, headers={"If-None-Match": '"0123456789abcdef0123456789abcdef"'})
    assert stale.status_code == 200
    assert hashlib.md5(stale.content).hexdigest() == photos[0]["checksum"]


def test_download_of_an_unknown_photo_is_404(ho, client):
    assert_error(client.get(f"{ho.api}/sync/product-photos/{uuid.uuid4()}/download/"), 404,
                 "not_found")


def _statuses(ho, store_id: str) -> dict[str, dict]:
    with ho.catalog() as conn:
        rows = conn.execute("SELECT photo_id, version, status, synced_at, error "
                            "FROM photo_sync_status WHERE store_id = %s", (store_id,)).fetchall()
    return {str(row["photo_id"]): row for row in rows}


def test_status_report_is_recorded_per_store_and_photo(ho, photos):
    store_id, _ = ho.add_store("reporter")
    client = ho.session(store_id)
    url = f"{ho.api}/sync/product-photos/status/"
    synced_at = "2026-02-03T10:00:00+00:00"
    batch = [{"photo_id": photos[0]["id"], "status": "synced", "synced_at": synced_at,
              "error": None, "version": 1},
             {"photo_id": photos[1]["id"], "status": "failed", "synced_at": None,
              "error": "checksum mismatch", "version": 1}]
    response = client.post(url, json={"store_id": store_id, "sync_batch": batch})
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2 and isinstance(body["message"], str)
    recorded = _statuses(ho, store_id)
    assert set(recorded) == {photos[0]["id"], photos[1]["id"]}
    assert recorded[photos[0]["id"]]["status"] == "synced"
    assert recorded[photos[0]["id"]]["synced_at"] == dt.datetime.fromisoformat(synced_at)
    assert (recorded[photos[1]["id"]]["status"], recorded[photos[1]["id"]]["error"]) \
        == ("failed", "checksum mismatch")
    # The same report again (a retry after a lost answer) changes nothing.
    assert client.post(url, json={"store_id": store_id, "sync_batch": batch}).json()["count"] == 2
    again = _statuses(ho, store_id)
    assert {k: (v["version"], v["status"], v["error"]) for k, v in again.items()} \
        == {k: (v["version"], v["status"], v["error"]) for k, v in recorded.items()}
    # Another store's report on the same photo is its own and leaves this one alone.
    other = ho.session(ho.store_b).post(url, json={"sync_batch": [
        {"photo_id": photos[0]["id"], "status": "failed", "version": 1, "error": "disk full"}]})
    assert other.status_code == 200
    assert _statuses(ho, ho.store_b)[photos[0]["id"]]["status"] == "failed"
    assert _statuses(ho, store_id)[photos[0]["id"]]["status"] == "synced"


def test_status_of_an_older_version_does_not_overwrite_a_newer_one(ho, photos):
    store_id, _ = ho.add_store("versions")
    client = ho.session(store_id)
    url = f"{ho.api}/sync/product-photos/status/"
    photo_id = photos[2]["id"]

    def report(version: int, status: str, error: str | None = None):
        # store_id may be left out: the token says which store reports.
        response = client.post(url, json={"sync_batch": [
            {"photo_id": photo_id, "status": status, "version": version, "error": error}]})
        assert response.status_code == 200
        return _statuses(ho, store_id)[photo_id]

    assert (report(3, "synced")["version"], report(3, "synced")["status"]) == (3, "synced")
    late = report(2, "failed", "timeout")  # an old report delivered late
    assert (late["version"], late["status"], late["error"]) == (3, "synced", None)
    newer = report(4, "failed", "disk full")
    assert (newer["version"], newer["status"], newer["error"]) == (4, "failed", "disk full")


def test_status_batch_repeating_a_photo_keeps_its_last_word(ho, photos):
    store_id, _ = ho.add_store("repeats")
    client = ho.session(store_id)
    photo_id = photos[3]["id"]
    batch = [{"photo_id": photo_id, "status": "syncing", "version": 1},
             {"photo_id": photo_id, "status": "synced", "version": 1}]
    response = client.post(f"{ho.api}/sync/product-photos/status/", json={"sync_batch": batch})
    assert response.status_code == 200
    assert _statuses(ho, store_id)[photo_id]["status"] == "synced"


def test_status_error_text_that_postgres_cannot_hold_is_still_recorded(ho, photos):
    # JSON allows lone surrogates and NUL; a store's error text must not turn into a 500.
    store_id, _ = ho.add_store("odd-errors")
    client = ho.session(store_id)
    body = ('{"sync_batch": [{"photo_id": "%s", "status": "failed", "version": 1, '
            '"error": "bad \\ud800 byte \\u0000 here"}]}' % photos[4]["id"])
    response = client.post(f"{ho.api}/sync/product-photos/status/", data=body,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    recorded = _statuses(ho, store_id)[photos[4]["id"]]
    assert recorded["status"] == "failed"
    assert recorded["error"].startswith("bad ") and recorded["error"].endswith(" here")


def test_health_reports_catalog_and_storage_up(ho):
    response = requests.get(f"{ho.api}/health/", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["catalog"]["ok"] is True and body["storage"]["ok"] is True


def test_openapi_describes_every_endpoint(ho):
    response = requests.get(f"{ho.api}/openapi.json", timeout=10)
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    assert doc["servers"] == [{"url": ho.url}]
    assert set(doc["paths"]) == {f"/api/v1/{p}" for p in (
        "auth/token/", "sync/product-photos/", "sync/product-photos/{photo_id}/download/",
        "sync/product-photos/status/", "health/", "openapi.json")}
    listed = doc["paths"]["/api/v1/sync/product-photos/"]["get"]
    assert {p["name"] for p in listed["parameters"]} == {"store_id", "limit", "offset", "since",
                                                        "cursor"}
    # The short-lived fields (download_url, signed_url and its expiry) are in the schema,
    # present in a listing only when HO offers presigned downloads or signed links.
    assert set(doc["components"]["schemas"]["Photo"]["properties"]) == PHOTO_FIELDS | {
        "download_url", "signed_url", "signed_url_expires"}
    for path in ("sync/product-photos/", "sync/product-photos/{photo_id}/download/"):
        assert doc["paths"][f"/api/v1/{path}"]["get"]["security"] == [{"bearer": []}]


# A big photo streams through the worker ---------------------------------------------------

def test_twenty_megabyte_photo_streams_without_the_worker_holding_it(ho_stack, tmp_path_factory):
    # One worker, so the process serving the download is the one measured.
    stack = ho_stack("big", workers=1, threads=4)
    folder = tmp_path_factory.mktemp("big")
    product = folder / str(uuid.uuid4())
    product.mkdir()
    big = product / "poster.jpg"
    big.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(20 * MB - 4))
    testbed.make_jpeg(product / "thumb.jpg", 20_000, seed=5)
    stack.import_dir(folder)
    store_id, _ = stack.add_store()
    client = stack.session(store_id)
    by_name = {p["filename"]: p for p in
               client.get(f"{stack.api}/sync/product-photos/").json()["photos"]}
    assert by_name["poster.jpg"]["size"] == 20 * MB

    # Warm up: the worker has served a download before it is measured.
    thumb = client.get(f"{stack.api}/sync/product-photos/{by_name['thumb.jpg']['id']}/download/")
    assert thumb.status_code == 200
    (pid,) = stack.server.worker_pids()
    worker = psutil.Process(pid)
    baseline = peak = worker.memory_info().rss

    md5, sha256, received = hashlib.md5(), hashlib.sha256(), 0
    url = f"{stack.api}/sync/product-photos/{by_name['poster.jpg']['id']}/download/"
    with client.get(url, stream=True, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(20 * MB)
        for chunk in response.iter_content(64 * 1024):
            md5.update(chunk)
            sha256.update(chunk)
            received += len(chunk)
            peak = max(peak, worker.memory_info().rss)
        headers = response.headers
    assert received == 20 * MB
    assert md5.hexdigest() == headers["X-Checksum"] == hashlib.md5(big.read_bytes()).hexdigest()
    assert sha256.hexdigest() == headers["X-Checksum-SHA256"]
    assert peak - baseline < 8 * MB, f"worker RSS grew by {(peak - baseline) / MB:.1f} MB"


# S3 down ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def outage(pg, bed_root, photo_factory):
    """An HO on its own S3 server, which the test may stop."""
    s3 = testbed.SeaweedS3(bed_root / "s3-outage").start()
    env = testbed.ho_environment(pg.create_db("ho_outage"), s3, bucket="photos-outage")
    server = testbed.HOServer(bed_root / "ho-outage", env, workers=1, threads=4)

    def cli(*args: str) -> str:
        result = subprocess.run([str(BIN / "photo-sync-ho"), *args], env={**os.environ, **env},
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    try:
        cli("init-db")
        cli("import", str(photo_factory(2, seed=21, min_kb=8, max_kb=20, mean_kb=12)))
        store_id = str(uuid.uuid4())
        secret = cli("store", "add", store_id).split()[-1]
        server.start()
        yield server, s3, store_id, secret
    finally:
        server.stop()
        s3.stop()


def test_s3_down_gives_503_on_download_and_health_while_listing_still_works(outage):
    server, s3, store_id, secret = outage
    api = server.url + "/api/v1"
    access = requests.post(f"{api}/auth/token/", json={"store_id": store_id, "secret": secret},
                           timeout=10).json()["access"]
    client = requests.Session()
    client.headers["Authorization"] = f"Bearer {access}"
    photo = client.get(f"{api}/sync/product-photos/").json()["photos"][0]
    download = f"{api}/sync/product-photos/{photo['id']}/download/"
    assert client.get(download).status_code == 200

    s3.stop()

    body = assert_error(client.get(download, timeout=30), 503, "storage_unavailable")
    assert "S3" in body["detail"]
    health = requests.get(f"{api}/health/", timeout=30)
    assert health.status_code == 503
    assert health.headers["Content-Type"].startswith("application/json")
    state = health.json()
    assert state["status"] == "degraded"
    assert state["storage"]["ok"] is False and state["storage"]["detail"]
    assert state["catalog"]["ok"] is True
    # The catalog does not need S3: stores can still list and report.
    page = client.get(f"{api}/sync/product-photos/")
    assert page.status_code == 200 and page.json()["total"] == 2
    report = client.post(f"{api}/sync/product-photos/status/", json={"sync_batch": [
        {"photo_id": photo["id"], "status": "failed", "version": 1, "error": "HO 503"}]})
    assert report.status_code == 200


def test_download_head_and_weak_etag(ho_stack, photo_factory):
    ho = ho_stack("headweak")
    ho.import_dir(photo_factory(1, seed=3, min_kb=20, max_kb=30, mean_kb=25))
    store_id, _ = ho.add_store()
    s = ho.session(store_id)
    photo = s.get(f"{ho.api}/sync/product-photos/").json()["photos"][0]
    url = f"{ho.api}/sync/product-photos/{photo['id']}/download/"
    head = s.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(photo["size"])
    assert head.headers["X-Checksum"] == photo["checksum"]
    weak = s.get(url, headers={"If-None-Match": f'W/"{photo["checksum"]}"'})
    assert weak.status_code == 304 and weak.content == b""


def test_one_store_cannot_take_every_download_slot(ho_stack, bed_root):
    import time

    from support import testbed
    ho = ho_stack("inflight", workers=1, extra_env={"PHOTO_SYNC_HO_MAX_DOWNLOADS_PER_STORE": "1"})
    folder = bed_root / "inflight-photos"
    testbed.make_jpeg(folder / "big.jpg", 8 * 1024 * 1024, seed=5)
    ho.import_dir(folder)
    store_a, _ = ho.add_store("a")
    store_b, _ = ho.add_store("b")
    a, b = ho.session(store_a), ho.session(store_b)
    photo = a.get(f"{ho.api}/sync/product-photos/").json()["photos"][0]
    url = f"{ho.api}/sync/product-photos/{photo['id']}/download/"
    held = a.get(url, stream=True)  # not read: the server thread stays busy sending it
    assert held.status_code == 200
    second = ho.session(store_a).get(url)
    assert second.status_code == 429
    assert second.headers["Retry-After"] == "1" and second.json()["error"] == "too_many_requests"
    assert b.get(url).status_code == 200, "another store is not limited by store A"
    held.close()
    for _ in range(50):  # the slot frees once the server notices the closed connection
        again = ho.session(store_a).get(url)
        if again.status_code == 200:
            break
        time.sleep(0.1)
    assert again.status_code == 200 and len(again.content) == photo["size"]
