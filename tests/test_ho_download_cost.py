"""The download endpoint's cheaper path keeps every answer: auth, revocation, expiry, errors.

The X-Accel download reads store and photo in one statement, remembers verified tokens and
signs S3 URLs without minio's per-call work; these tests prove a store sees no difference:
revocation is immediate, an expired token is refused, the error order is unchanged, and the
hand-made SigV4 URLs are minio's own and fetch real objects from SeaweedFS.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid

import jwt
import pytest
import requests
from minio import Minio

from photo_sync.ho import auth
from photo_sync.ho.storage import Presigner, Storage

AWKWARD_KEYS = ["p/plain.jpg", "a b/ü~x (1).jpg", "x/+&=?#%.jpg", "deep/a/b/c/d.JPG"]


@pytest.fixture(scope="module")
def ho(ho_stack, photo_factory):
    # No clock-skew leeway: the expiry test waits only just past exp.
    stack = ho_stack("cost", extra_env={"PHOTO_SYNC_HO_ACCEL_REDIRECT": "true",
                                        "PHOTO_SYNC_HO_TOKEN_LEEWAY": "0"})
    stack.import_dir(photo_factory(2, seed=5, products=1, min_kb=5, max_kb=10, mean_kb=8))
    return stack


def download(ho, token: str, photo_id: str, **params) -> requests.Response:
    return requests.get(f"{ho.api}/sync/product-photos/{photo_id}/download/", params=params,
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)


def a_photo(ho, token: str) -> str:
    listing = requests.get(f"{ho.api}/sync/product-photos/", timeout=30,
                           headers={"Authorization": f"Bearer {token}"})
    assert listing.status_code == 200, listing.text
    return listing.json()["photos"][0]["id"]


def error_of(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_a_used_token_is_refused_at_once_when_its_store_is_disabled(ho):
    store_id, _ = ho.add_store("cost-disable")
    token = ho.token(store_id)
    photo = a_photo(ho, token)
    for _ in range(3):  # the token is now a verified one in every worker that saw it
        assert "X-Accel-Redirect" in download(ho, token, photo).headers
    ho.cli("store", "disable", store_id)
    assert error_of(download(ho, token, photo), 401) == "unauthorized"
    ho.cli("store", "enable", store_id)
    # Enabling does not bring old tokens back (disable moved the token generation).
    assert error_of(download(ho, token, photo), 401) == "unauthorized"


def test_a_used_token_is_refused_once_the_secret_is_rotated(ho):
    store_id, _ = ho.add_store("cost-rotate")
    token = ho.token(store_id)
    photo = a_photo(ho, token)
    assert download(ho, token, photo).status_code == 200
    ho.cli("store", "rotate-secret", store_id)
    body = download(ho, token, photo)
    assert error_of(body, 401) == "unauthorized"
    assert "revoked" in body.json()["detail"]


def test_a_used_token_is_refused_once_it_expires(ho):
    store_id, _ = ho.add_store("cost-expiry")
    photo = a_photo(ho, ho.token(store_id))
    with ho.catalog() as conn:
        generation = conn.execute("SELECT token_generation FROM sync_store WHERE id = %s",
                                  (store_id,)).fetchone()["token_generation"]
    ttl = 4
    token = auth.issue_token({"id": store_id, "token_generation": generation},
                             ho.env["PHOTO_SYNC_HO_JWT_SECRET"], ttl)
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    for _ in range(4):  # both workers most likely remember it now
        assert download(ho, token, photo).status_code == 200
    time.sleep(max(0.0, expires + 1.1 - time.time()))
    body = download(ho, token, photo)
    assert error_of(body, 401) == "unauthorized"
    assert "expired" in body.json()["detail"]


def test_download_errors_keep_their_order(ho):
    store_id, _ = ho.add_store("cost-order")
    other, _ = ho.add_store("cost-other")
    token = ho.token(store_id)
    photo = a_photo(ho, token)
    assert error_of(download(ho, "not-a-jwt", photo), 401) == "unauthorized"
    assert error_of(download(ho, token, photo, store_id=other), 403) == "forbidden"
    assert error_of(download(ho, token, "not-a-uuid"), 400) == "invalid_photo_id"
    assert error_of(download(ho, token, str(uuid.uuid4())), 404) == "not_found"
    ho.cli("store", "disable", store_id)
    # A refused token is a 401 before anything about the request's parameters.
    assert error_of(download(ho, token, "not-a-uuid"), 401) == "unauthorized"
    assert error_of(download(ho, token, photo, store_id=other), 401) == "unauthorized"


def test_presigned_urls_are_minios_own():
    when = dt.datetime(2026, 3, 4, 23, 59, 58, tzinfo=dt.timezone.utc)
    for endpoint, secure in (("127.0.0.1:8333", False), ("s3.example.test", True)):
        client = Minio(endpoint, access_key="AK/+ x", secret_key="sk", secure=secure,
                       region="eu-west-3")
        signer = Presigner(client, "photos", "AK/+ x", "sk", "eu-west-3")
        for key in AWKWARD_KEYS:
            for ttl in (1, 300, 604800):
                expected = client.presigned_get_object(
                    "photos", key, expires=dt.timedelta(seconds=ttl), request_date=when)
                assert signer.origin + signer.path_and_query(key, ttl, when) == expected
        # The next day's URL is signed with that day's key, not the one remembered.
        later = when + dt.timedelta(seconds=5)
        assert (signer.origin + signer.path_and_query("p/plain.jpg", 60, later) ==
                client.presigned_get_object("photos", "p/plain.jpg",
                                            expires=dt.timedelta(seconds=60),
                                            request_date=later))


def test_presigned_urls_fetch_awkward_keys_from_real_s3(s3):
    storage = Storage(s3.endpoint, s3.access_key, s3.secret_key, "cost-sigv4")
    storage.ensure_bucket()
    for index, key in enumerate(AWKWARD_KEYS):
        data = f"photo {index}".encode()
        storage.put(key, data, "image/jpeg")
        response = requests.get(storage.presign(key, 60), timeout=30)
        assert response.status_code == 200, response.text
        assert response.content == data
        own = requests.get(f"http://{s3.endpoint}{storage.presign_path(key, 60)}", timeout=30)
        assert own.content == data
    tampered = storage.presign(AWKWARD_KEYS[0], 60).replace("X-Amz-Expires=60",
                                                             "X-Amz-Expires=61")
    assert requests.get(tampered, timeout=30).status_code == 403
