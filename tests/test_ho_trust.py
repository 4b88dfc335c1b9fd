"""HO's trust boundary against real gunicorn, PostgreSQL and S3 (issue 19's review items).

Store secret hashes are a fast keyed hash (old scrypt hashes still work and are replaced on
the store's next token); tokens from a host whose clock runs a little ahead are accepted
within a leeway.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid

import jwt
import pytest
import requests


@pytest.fixture(scope="module")
def ho(ho_stack, photo_factory):
    stack = ho_stack("trust", workers=2)
    stack.import_dir(photo_factory(3, seed=191, min_kb=6, max_kb=12, mean_kb=8))
    return stack


def _scrypt_hash(secret: str) -> str:
    """A store secret hash in the format HO wrote before issue 19 (scrypt, n=2^14, r=8)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt${2**14}$8$1${salt.hex()}${digest.hex()}"


def _stored_hash(ho, store_id: str) -> str:
    with ho.catalog() as conn:
        return conn.execute("SELECT secret_hash FROM sync_store WHERE id = %s",
                            (store_id,)).fetchone()["secret_hash"]


def test_an_old_scrypt_hash_still_authenticates_and_is_upgraded(ho):
    # Fails on the old code: every check was scrypt (~16 MiB of memory each), and a hash
    # stayed scrypt forever.
    store_id, secret = ho.add_store("old-hash")
    assert _stored_hash(ho, store_id).startswith("hmac-sha256$"), "new stores: the fast hash"
    with ho.catalog() as conn:
        conn.execute("UPDATE sync_store SET secret_hash = %s WHERE id = %s",
                     (_scrypt_hash(secret), store_id))
    assert ho.ask_token(store_id, "wrong-" + secret).status_code == 401
    assert _stored_hash(ho, store_id).startswith("scrypt$"), "a wrong secret upgrades nothing"
    first = ho.ask_token(store_id, secret)
    assert first.status_code == 200, first.text
    upgraded = _stored_hash(ho, store_id)
    assert upgraded.startswith("hmac-sha256$"), upgraded.split("$")[0]
    assert secret not in upgraded
    # The upgraded hash keeps working, the old token too (no generation change).
    assert ho.ask_token(store_id, secret).status_code == 200
    assert ho.ask_token(store_id, "wrong-" + secret).status_code == 401
    assert ho.list_photos(first.json()["access"]).status_code == 200


def _forged(ho, store_id: str, iat: int, exp: int) -> str:
    """A token signed with HO's own key, as another API host would have issued it."""
    from photo_sync.ho import auth
    with ho.catalog() as conn:
        generation = conn.execute("SELECT token_generation FROM sync_store WHERE id = %s",
                                  (store_id,)).fetchone()["token_generation"]
    claims = {"sub": store_id, "iat": iat, "exp": exp, "iss": auth.ISSUER,
              "aud": auth.AUDIENCE, "gen": generation}
    return jwt.encode(claims, ho.env["PHOTO_SYNC_HO_JWT_SECRET"], algorithm=auth.ALGORITHM)


def test_a_token_from_a_host_a_few_seconds_ahead_is_accepted(ho):
    # Fails on the old code: iat 5 s in the future was 401 "invalid token" and the agent
    # aborted its run.
    store_id, _ = ho.add_store("skewed")
    now = int(time.time())
    ahead = ho.list_photos(_forged(ho, store_id, now + 5, now + 3600))
    assert ahead.status_code == 200, ahead.text
    # The leeway (30 s by default) is small: a token expired longer ago is refused.
    expired = ho.list_photos(_forged(ho, store_id, now - 3600, now - 120))
    assert expired.status_code == 401
    assert "expired" in expired.json()["detail"]
    far_ahead = ho.list_photos(_forged(ho, store_id, now + 600, now + 3600))
    assert far_ahead.status_code == 401


def test_unknown_store_ids_are_refused_like_wrong_secrets(ho):
    assert ho.ask_token(str(uuid.uuid4()), "z" * 43).status_code == 401


def _photo_id(ho) -> str:
    with ho.catalog() as conn:
        return str(conn.execute("SELECT id FROM product_photo WHERE deleted_at IS NULL "
                                "ORDER BY id LIMIT 1").fetchone()["id"])


def _assert_storage_refused(response: requests.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["Content-Type"] == "application/json", response.headers
    body = response.json()
    assert body["error"] == "storage_refused", body
    assert "refused" in body["detail"] and "re-import" not in body["detail"], body
    assert int(response.headers["Retry-After"]) > 0


def test_s3_refusing_hos_key_is_503_storage_refused_not_object_missing(ho, bed_root, s3):
    # Fails on the old code: behind the gateway the refusal was 404 object_missing ("re-import
    # it at HO"), so every store marked every photo failed for the wrong reason.
    from support import gateway as gw_support
    from support import testbed
    env = {**ho.env, "PHOTO_SYNC_HO_S3_SECRET_KEY": "not-" + ho.env["PHOTO_SYNC_HO_S3_SECRET_KEY"]}
    store_id, _ = ho.add_store("s3-refused")
    token = ho.token(store_id)
    path = f"/api/v1/sync/product-photos/{_photo_id(ho)}/download/"
    auth = {"Authorization": f"Bearer {token}"}
    direct = testbed.HOServer(bed_root / "trust-wrong-key", env).start(wait_healthy=False)
    try:
        _assert_storage_refused(requests.get(direct.url + path, headers=auth, timeout=30))
        health = requests.get(f"{direct.url}/api/v1/health/", timeout=30)
        assert health.status_code == 503
        assert health.json()["storage"]["ok"] is False
        assert health.json()["catalog"]["ok"] is True
    finally:
        direct.stop()
    if gw_support.nginx_missing():
        pytest.skip(gw_support.nginx_missing())
    accel = testbed.HOServer(bed_root / "trust-wrong-key-accel", {
        **env, "PHOTO_SYNC_HO_ACCEL_REDIRECT": "true",
        "PHOTO_SYNC_HO_TRUSTED_PROXIES": "1"}).start(wait_healthy=False)
    gateway = gw_support.Gateway(bed_root / "trust-wrong-key-gw", [f"127.0.0.1:{accel.port}"],
                                 s3.endpoint, ho.env["PHOTO_SYNC_HO_S3_BUCKET"])
    try:
        gateway.start()
        _assert_storage_refused(requests.get(gateway.url + path, headers=auth, timeout=30,
                                             verify=str(gateway.tls.ca_path)))
    finally:
        gateway.stop()
        accel.stop()


def test_a_read_only_catalog_keeps_reads_working_and_refuses_writes_with_503(ho_stack,
                                                                            photo_factory):
    # Fails on the old code: every token request wrote (failure bookkeeping) and was a 500;
    # a status report was a 500 too.
    stack = ho_stack("trust-ro", workers=1)
    stack.import_dir(photo_factory(2, seed=193, min_kb=6, max_kb=12, mean_kb=8))
    store_id, secret = stack.add_store("standby-reader")
    old_token = stack.token(store_id)
    dbname = stack.database_url.rsplit("/", 1)[1]
    with stack.catalog() as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
    stack.server.stop()
    stack.server.start(wait_healthy=False)
    try:
        fresh = stack.ask_token(store_id, secret)
        assert fresh.status_code == 200, fresh.text
        wrong = stack.ask_token(store_id, "wrong-" + secret)
        assert wrong.status_code == 401, wrong.text
        for token in (old_token, fresh.json()["access"]):
            page = stack.list_photos(token)
            assert page.status_code == 200, page.text
        photo = page.json()["photos"][0]
        auth = {"Authorization": f"Bearer {token}"}
        got = requests.get(f"{stack.api}/sync/product-photos/{photo['id']}/download/",
                           headers=auth, timeout=30)
        assert got.status_code == 200 and hashlib.md5(got.content).hexdigest() == \
            photo["checksum"]
        report = requests.post(f"{stack.api}/sync/product-photos/status/", headers=auth,
                               timeout=30, json={"sync_batch": [
                                   {"photo_id": photo["id"], "status": "synced", "version": 1}]})
        assert report.status_code == 503, report.text
        assert report.json()["error"] == "catalog_read_only"
        assert "read-only" in report.json()["detail"]
        assert int(report.headers["Retry-After"]) > 0
        assert "Traceback" not in stack.server.log_path.read_text()
    finally:
        with stack.catalog() as conn:
            conn.execute("SET default_transaction_read_only = off")
            conn.execute(f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only')
