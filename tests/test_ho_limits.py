"""HO against careless or hostile callers, through real gunicorn (2 workers), PostgreSQL and S3.

Failed token requests are limited per store id and per client address in the
catalog, so the limit holds across workers; status reports about photos HO
never had are not stored; a lock held in the catalog ends a request with a
503 within the lock timeout instead of holding a thread; and gunicorn takes
its bind, workers and threads from the same settings file as everything else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import psycopg
import pytest
import requests

from support import testbed

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ho(ho_stack, photo_factory):
    stack = ho_stack("limits", workers=2,
                     extra_env={"PHOTO_SYNC_HO_LOCK_TIMEOUT_MS": "500"})
    stack.import_dir(photo_factory(3, seed=71, min_kb=6, max_kb=12, mean_kb=8))
    return stack


def test_wrong_secrets_slow_the_guesser_and_never_lock_out_the_store(ho):
    # Fails on the old code: after 10 wrong secrets from anyone, the store's own right
    # secret got 429 "retry in 294 s" and its run was refused (store ids are not secrets).
    victim, victim_secret = ho.add_store("victim")
    other, other_secret = ho.add_store("other")
    answers = []
    for attempt in range(30):
        # A client-chosen X-Forwarded-For changes nothing: no proxy is trusted by default.
        answers.append(ho.ask_token(victim, f"guess-{attempt:04d}-" + "x" * 20,
                                 {"X-Forwarded-For": f"198.51.100.{attempt}"}))
    statuses = [r.status_code for r in answers]
    assert statuses == [401] * 10 + [429] * 20, statuses
    for refused in answers[10:]:
        assert refused.json()["error"] == "too_many_failures" and refused.json()["detail"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 300
    # Counted once each, per (store, address) in the catalog both workers share; never
    # per store id alone.
    with ho.catalog() as conn:
        keys = {row["key"]: row["n"] for row in conn.execute(
            "SELECT key, count(*) AS n FROM auth_failure WHERE key LIKE %s GROUP BY key",
            (f"store:{victim}%",)).fetchall()}
    assert keys == {f"store:{victim}@127.0.0.1": 10}, keys
    # The store's right secret gets a token at once, from the very address that guessed.
    granted = ho.ask_token(victim, victim_secret)
    assert granted.status_code == 200, granted.text
    assert requests.get(f"{ho.api}/sync/product-photos/", timeout=30, headers={
        "Authorization": f"Bearer {granted.json()['access']}"}).status_code == 200
    assert ho.ask_token(other, other_secret).status_code == 200
    # The address's own count stays: it still limits that address's guesses at any store.
    with ho.catalog() as conn:
        counted = conn.execute("SELECT count(*) AS n FROM auth_failure WHERE key = %s",
                               ("addr:127.0.0.1",)).fetchone()["n"]
    assert counted >= 10


def test_failures_from_one_address_are_limited_behind_a_trusted_proxy(ho_stack):
    proxied = ho_stack("limits-proxy", workers=2, extra_env={
        "PHOTO_SYNC_HO_TRUSTED_PROXIES": "1", "PHOTO_SYNC_HO_AUTH_MAX_FAILURES_PER_ADDRESS": "5"})
    store_id, secret = proxied.add_store("behind-proxy")
    attacker = {"X-Forwarded-For": "203.0.113.7"}
    # Unknown store ids: each id is fresh, only the address adds up.
    statuses = [proxied.ask_token(str(uuid.uuid4()), "y" * 32, attacker).status_code
                for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    blocked = proxied.ask_token(store_id, "wrong-" + secret, attacker)
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
    # The proxy appends the address it saw; what the client put in front is not believed.
    spoofed = {"X-Forwarded-For": "192.0.2.1, 203.0.113.7"}
    assert proxied.ask_token(store_id, "wrong-" + secret, spoofed).status_code == 429
    assert proxied.ask_token(store_id, "wrong-" + secret, {"X-Forwarded-For": "203.0.113.8"}) \
        .status_code == 401
    # A store behind the attacker's address (one NAT) still gets in with its right secret.
    assert proxied.ask_token(store_id, secret, attacker).status_code == 200


def test_status_reports_about_unknown_photos_are_not_stored(ho):
    # Fails on the old code: every well-formed id was stored, so one store's credentials
    # could grow photo_sync_status without bound.
    store_id, _ = ho.add_store("reporter")
    client = ho.session(store_id)
    photos = client.get(f"{ho.api}/sync/product-photos/").json()["photos"]
    live, doomed = photos[0]["id"], photos[1]["id"]
    ho.cli("delete", doomed)
    made_up = [str(uuid.uuid4()) for _ in range(3)]
    batch = [{"photo_id": live, "status": "synced", "version": 1},
             {"photo_id": doomed, "status": "deleted", "version": 1}]
    batch += [{"photo_id": photo_id, "status": "failed", "version": 1, "error": "x" * 100}
              for photo_id in made_up]
    response = client.post(f"{ho.api}/sync/product-photos/status/", json={"sync_batch": batch})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["count"], body["ignored"]) == (2, 3)
    assert "ignored 3" in body["message"]
    with ho.catalog() as conn:
        rows = conn.execute("SELECT photo_id::text AS id, status FROM photo_sync_status "
                            "WHERE store_id = %s", (store_id,)).fetchall()
    assert {row["id"]: row["status"] for row in rows} == {live: "synced", doomed: "deleted"}
    only_made_up = client.post(f"{ho.api}/sync/product-photos/status/", json={
        "sync_batch": batch[2:]})
    assert only_made_up.status_code == 200
    assert (only_made_up.json()["count"], only_made_up.json()["ignored"]) == (0, 3)


def test_a_held_catalog_lock_is_a_503_within_the_lock_timeout_not_a_hang(ho):
    # Fails on the old code: the request waited as long as the lock was held (here: until
    # the client's own timeout).
    store_id, _ = ho.add_store("locked-out")
    client = ho.session(store_id)
    url = f"{ho.api}/sync/product-photos/"
    with psycopg.connect(ho.database_url) as holder:
        holder.execute("LOCK TABLE product_photo IN ACCESS EXCLUSIVE MODE")
        try:
            response = client.get(url, timeout=20)
        finally:
            holder.rollback()
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "catalog_busy" and response.headers["Retry-After"]
    assert client.get(url, timeout=20).status_code == 200


def test_gunicorn_takes_bind_workers_and_threads_from_the_settings_file(ho, tmp_path):
    # One settings object: the file named by PHOTO_SYNC_HO_CONFIG sets gunicorn's bind and
    # workers too. Fails on the old code (gunicorn_conf read only the environment, so it
    # bound the default 127.0.0.1:8080).
    port = testbed.free_port()
    config = tmp_path / "ho.env"
    settings = {**ho.env, "PHOTO_SYNC_HO_BIND": f"127.0.0.1:{port}",
                "PHOTO_SYNC_HO_WORKERS": "3", "PHOTO_SYNC_HO_THREADS": "2"}
    config.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    config.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTO_SYNC_HO_")}
    env["PHOTO_SYNC_HO_CONFIG"] = str(config)
    log = tmp_path / "gunicorn.log"
    with log.open("ab") as out:
        server = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "python:photo_sync.ho.gunicorn_conf",
             "photo_sync.ho.app:create_app()"], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        def healthy() -> bool:
            if server.poll() is not None:
                raise testbed.TestbedError(log.read_text()[-2000:])
            return requests.get(f"http://127.0.0.1:{port}/api/v1/health/", timeout=5).ok
        testbed.wait_for(healthy, 60, "gunicorn from the settings file")
        testbed.wait_for(lambda: len(psutil.Process(server.pid).children()) == 3, 30,
                         "three workers")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)


def test_an_api_newer_than_its_catalog_says_so_with_a_503(ho):
    # A rollout that restarts the API before `init-db` ran: a 503 naming no internals (the
    # HO log names the command), not a 500 with a traceback. Restored by init-db.
    store_id, secret = ho.add_store("early")
    with ho.catalog() as conn:
        conn.execute("DROP TABLE auth_failure")
    try:
        early = ho.ask_token(store_id, secret)
        assert early.status_code == 503, early.text
        assert early.json()["error"] == "catalog_not_ready" and early.headers["Retry-After"]
    finally:
        ho.cli("init-db")
    assert ho.ask_token(store_id, secret).status_code == 200
    log = ho.server.log_path.read_text(errors="replace")
    assert "photo-sync-ho init-db" in log and "Traceback" not in log
