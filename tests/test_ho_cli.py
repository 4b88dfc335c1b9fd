"""`photo-sync-ho` as an operator runs it, checked through what stores then see over HTTP.

Import (new, changed and unchanged bytes; files it must not take), delete
(tombstones), primary photos, product maps, the store lifecycle (add, set,
enable, disable, rotate-secret), and the `--json` answers the roles judge
`changed` by.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from support import testbed

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ho(ho_stack):
    return ho_stack("cli")


@pytest.fixture(scope="module")
def store(ho):
    store_id, _ = ho.add_store("cli-reader")
    return ho.session(store_id)


def feed(ho, client, cursor: str | None = None) -> tuple[dict[str, dict], str]:
    """Every row of the feed after `cursor` (the whole listing without one), and the new cursor."""
    rows: dict[str, dict] = {}
    params = {"limit": 50}
    if cursor:
        params["cursor"] = cursor
    while True:
        page = client.get(f"{ho.api}/sync/product-photos/", params=params).json()
        rows.update({p["id"]: p for p in page["photos"]})
        params = {"limit": 50, "cursor": page["next_cursor"]}
        if not page["has_more"]:
            return rows, page["next_cursor"]


def import_json(ho, folder: Path, *extra: str) -> dict:
    return json.loads(ho.cli("import", str(folder), "--json", *extra).stdout)


def error_body(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] and body["detail"]
    return body


def test_init_db_is_idempotent(ho):
    first = ho.cli("init-db")
    second = ho.cli("init-db")
    assert "catalog schema is current" in first.stdout
    assert second.stdout.strip() == "catalog schema is current"
    assert json.loads(ho.cli("init-db", "--json").stdout) \
        == {"changed": False, "statements": 0, "bucket_created": False}


def test_init_db_json_says_changed_on_a_fresh_catalog_and_on_an_upgrade(ho, pg, s3):
    # What the role judges `changed` by. Fails on the old code (no --json, and an upgrade
    # printed the same words as a run that changed nothing).
    env = testbed.ho_environment(pg.create_db(f"ho_fresh_{uuid.uuid4().hex[:8]}"), s3,
                                 bucket=f"fresh-{uuid.uuid4().hex[:8]}")

    def init_db() -> dict:
        result = subprocess.run([str(BIN / "photo-sync-ho"), "init-db", "--json"],
                                env={**os.environ, **env}, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    fresh = init_db()
    assert fresh["changed"] is True and fresh["bucket_created"] is True
    assert fresh["statements"] >= 10
    assert init_db() == {"changed": False, "statements": 0, "bucket_created": False}

    # An older catalog: what a newer release adds is missing.
    import psycopg
    with psycopg.connect(env["PHOTO_SYNC_HO_DATABASE_URL"], autocommit=True) as conn:
        conn.execute("DROP TABLE auth_failure")
        conn.execute("DROP INDEX product_photo_updated_at_idx")
    upgraded = init_db()
    assert upgraded["changed"] is True and upgraded["bucket_created"] is False
    assert upgraded["statements"] == 4  # the table, its two indexes, the updated_at index
    assert init_db()["changed"] is False


def test_import_new_changed_and_unchanged_bytes(ho, store, tmp_path):
    product = tmp_path / "photos" / str(uuid.uuid4())
    for index in range(3):
        testbed.make_jpeg(product / f"shot-{index}.jpg", 12_000, seed=100 + index)
    _, cursor = feed(ho, store)

    created = import_json(ho, tmp_path / "photos")
    assert (created["created"], created["updated"], created["unchanged"]) == (3, 0, 0)
    rows, cursor = feed(ho, store, cursor)
    assert len(rows) == 3
    by_name = {row["filename"]: row for row in rows.values()}
    assert {row["version"] for row in rows.values()} == {1}
    for name, row in by_name.items():
        assert row["checksum"] == hashlib.md5((product / name).read_bytes()).hexdigest()

    # The same bytes again: nothing changes, nothing reaches the stores.
    same = import_json(ho, tmp_path / "photos")
    assert (same["created"], same["updated"], same["unchanged"]) == (0, 0, 3)
    assert feed(ho, store, cursor)[0] == {}

    # New bytes for one file: version 2 with the new checksum; the others stay as they were.
    testbed.make_jpeg(product / "shot-1.jpg", 14_000, seed=999)
    new_bytes = (product / "shot-1.jpg").read_bytes()
    changed = import_json(ho, tmp_path / "photos")
    assert (changed["created"], changed["updated"], changed["unchanged"]) == (0, 1, 2)
    rows, cursor = feed(ho, store, cursor)
    assert list(rows) == [by_name["shot-1.jpg"]["id"]]
    updated = rows[by_name["shot-1.jpg"]["id"]]
    assert updated["version"] == 2
    assert updated["checksum"] == hashlib.md5(new_bytes).hexdigest()
    assert updated["checksum"] != by_name["shot-1.jpg"]["checksum"]
    assert updated["image_url"].endswith(f"?v={updated['checksum'][:8]}")
    assert updated["size"] == len(new_bytes)
    download = store.get(f"{ho.api}/sync/product-photos/{updated['id']}/download/")
    assert download.content == new_bytes
    assert download.headers["X-Version"] == "2"
    assert download.headers["X-Checksum"] == updated["checksum"]
    # A store still holding version 1 revalidates and gets the new bytes, not a 304.
    revalidate = store.get(f"{ho.api}/sync/product-photos/{updated['id']}/download/",
                           headers={"If-None-Match": f'"{by_name["shot-1.jpg"]["checksum"]}"'})
    assert revalidate.status_code == 200 and revalidate.content == new_bytes

    # And once more: version 3.
    testbed.make_jpeg(product / "shot-1.jpg", 14_000, seed=1000)
    import_json(ho, tmp_path / "photos")
    rows, _ = feed(ho, store, cursor)
    assert rows[updated["id"]]["version"] == 3


def test_delete_leaves_a_tombstone_and_the_download_goes(ho, store, tmp_path):
    product = tmp_path / "photos" / str(uuid.uuid4())
    testbed.make_jpeg(product / "gone.jpg", 10_000, seed=7)
    testbed.make_jpeg(product / "kept.jpg", 10_000, seed=8)
    _, cursor = feed(ho, store)
    ids = {Path(p["file"]).name: p["id"] for p in import_json(ho, tmp_path / "photos")["photos"]}
    _, cursor = feed(ho, store, cursor)

    result = ho.cli("delete", ids["gone.jpg"])
    assert ids["gone.jpg"] in result.stdout
    rows, cursor = feed(ho, store, cursor)
    assert list(rows) == [ids["gone.jpg"]]
    assert rows[ids["gone.jpg"]]["deleted"] is True
    error_body(store.get(f"{ho.api}/sync/product-photos/{ids['gone.jpg']}/download/"), 404)
    assert store.get(f"{ho.api}/sync/product-photos/{ids['kept.jpg']}/download/").ok
    # The plain listing shows live photos only; `since` shows the tombstone too.
    listed, _ = feed(ho, store)
    assert ids["gone.jpg"] not in listed and ids["kept.jpg"] in listed
    since = store.get(f"{ho.api}/sync/product-photos/",
                      params={"since": "2000-01-01T00:00:00Z", "limit": 500}).json()
    assert {p["id"]: p["deleted"] for p in since["photos"]}[ids["gone.jpg"]] is True

    again = ho.cli("delete", ids["gone.jpg"], check=False)
    assert again.returncode == 1 and "already deleted" in again.stderr
    unknown = ho.cli("delete", str(uuid.uuid4()), check=False)
    assert unknown.returncode == 1 and "does not exist" in unknown.stderr

    # Importing the file again brings the photo back for the stores.
    back = import_json(ho, tmp_path / "photos")
    assert (back["created"], back["unchanged"]) == (1, 1)
    rows, _ = feed(ho, store, cursor)
    (returned,) = rows.values()
    assert (returned["filename"], returned["deleted"], returned["version"]) \
        == ("gone.jpg", False, 1)
    assert store.get(f"{ho.api}/sync/product-photos/{returned['id']}/download/").content \
        == (product / "gone.jpg").read_bytes()


def primaries(rows, product_id: str) -> list[str]:
    return sorted(p["filename"] for p in rows.values()
                  if p["product_id"] == product_id and p["is_primary"] and not p["deleted"])


def test_one_primary_photo_per_product(ho, store, tmp_path):
    product = str(uuid.uuid4())
    for index in range(3):
        testbed.make_jpeg(tmp_path / "photos" / product / f"p{index}.jpg", 8_000, seed=50 + index)
    import_json(ho, tmp_path / "photos")
    rows, _ = feed(ho, store)
    assert primaries(rows, product) == ["p0.jpg"]
    assert sorted(p["sort_order"] for p in rows.values() if p["product_id"] == product) == [0, 1, 2]

    # A product whose primary was deleted gets its next new photo as primary.
    primary_id = next(p["id"] for p in rows.values()
                      if p["product_id"] == product and p["is_primary"])
    ho.cli("delete", primary_id)
    (tmp_path / "photos" / product / "p0.jpg").unlink()  # or the next import brings it back
    rows, _ = feed(ho, store)
    assert primaries(rows, product) == []
    testbed.make_jpeg(tmp_path / "photos" / product / "p3.jpg", 8_000, seed=53)
    import_json(ho, tmp_path / "photos")
    rows, _ = feed(ho, store)
    assert primaries(rows, product) == ["p3.jpg"]


def test_product_map_sets_product_primary_and_order(ho, store, tmp_path):
    product = str(uuid.uuid4())
    folder = tmp_path / "flat"
    for index in range(3):
        testbed.make_jpeg(folder / f"sku-{index}.jpg", 8_000, seed=60 + index)
    mapping = tmp_path / "map.csv"
    mapping.write_text("filename,product_id,is_primary,sort_order\n"
                       f"sku-0.jpg,{product},,5\nsku-1.jpg,{product},true,1\n"
                       f"sku-2.jpg,{product},false,9\n")
    import_json(ho, folder, "--product-map", str(mapping))
    rows, cursor = feed(ho, store)
    mine = {p["filename"]: p for p in rows.values() if p["product_id"] == product}
    assert set(mine) == {"sku-0.jpg", "sku-1.jpg", "sku-2.jpg"}
    assert primaries(rows, product) == ["sku-1.jpg"]
    assert {name: p["sort_order"] for name, p in mine.items()} \
        == {"sku-0.jpg": 5, "sku-1.jpg": 1, "sku-2.jpg": 9}

    # A later import naming a new primary moves it; stores see both changes in the feed.
    testbed.make_jpeg(folder / "sku-3.jpg", 8_000, seed=63)
    mapping.write_text("filename,product_id,is_primary\n"
                       f"sku-3.jpg,{product},yes\n")
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(folder / "sku-3.jpg", extra / "sku-3.jpg")
    import_json(ho, extra, "--product-map", str(mapping))
    changes, _ = feed(ho, store, cursor)
    assert {p["filename"]: p["is_primary"] for p in changes.values()} \
        == {"sku-1.jpg": False, "sku-3.jpg": True}
    rows, _ = feed(ho, store)
    assert primaries(rows, product) == ["sku-3.jpg"]


def test_product_map_with_two_primaries_for_a_product_is_refused(ho, store, tmp_path):
    product = str(uuid.uuid4())
    for index in range(2):
        testbed.make_jpeg(tmp_path / "two" / f"dup-{index}.jpg", 8_000, seed=70 + index)
    mapping = tmp_path / "map.csv"
    mapping.write_text(f"filename,product_id,is_primary\ndup-0.jpg,{product},1\n"
                       f"dup-1.jpg,{product},1\n")
    result = ho.cli("import", str(tmp_path / "two"), "--product-map", str(mapping), check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "map.csv:3" in result.stderr and "primary" in result.stderr
    rows, _ = feed(ho, store)
    assert not any(p["product_id"] == product for p in rows.values())


def test_import_usage_errors_are_reported_without_a_traceback(ho, tmp_path):
    missing = ho.cli("import", str(tmp_path / "nowhere"), check=False)
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    (tmp_path / "bad.csv").write_text("name,product\nx.jpg,y\n")
    (tmp_path / "dir").mkdir()
    bad_map = ho.cli("import", str(tmp_path / "dir"), "--product-map", str(tmp_path / "bad.csv"),
                     check=False)
    assert bad_map.returncode == 1 and "filename and product_id" in bad_map.stderr
    bad_id = ho.cli("delete", "photo-1", check=False)
    assert bad_id.returncode == 2 and "not a UUID" in bad_id.stderr
    no_db = subprocess.run([str(BIN / "photo-sync-ho"), "store", "list"], capture_output=True,
                           text=True, env={k: v for k, v in os.environ.items()
                                           if not k.startswith("PHOTO_SYNC_HO_")})
    assert no_db.returncode == 2 and "PHOTO_SYNC_HO_DATABASE_URL" in no_db.stderr
    for result in (missing, bad_map, bad_id, no_db):
        assert "Traceback" not in result.stderr


def test_import_takes_only_regular_image_files_and_says_what_it_skipped(ho, store, tmp_path):
    # Fails on the old code: it uploaded a `*.jpg` symlink to a secret file (and text named
    # .jpg) to S3 and the catalog, from where every store downloads it.
    secret_file = tmp_path / "ho.env"
    secret_bytes = b"PHOTO_SYNC_HO_JWT_SECRET=do-not-ship-me-" + uuid.uuid4().hex.encode()
    secret_file.write_bytes(secret_bytes)
    outside = tmp_path / "outside"
    testbed.make_jpeg(outside / "elsewhere.jpg", 6_000, seed=90)
    folder = tmp_path / "drop"
    product = folder / str(uuid.uuid4())
    testbed.make_jpeg(product / "good.jpg", 8_000, seed=91)
    png = product / "really-a-png.jpg"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2000))
    (product / "secret.jpg").symlink_to(secret_file)
    (product / "photo-link.jpg").symlink_to(outside / "elsewhere.jpg")
    (folder / "linked-folder").symlink_to(outside, target_is_directory=True)
    (product / "text.jpg").write_bytes(b"just text, not an image\n" * 10)
    (product / "empty.png").write_bytes(b"")
    testbed.make_jpeg(product / "huge.jpg", 40_000, seed=92)
    (product / "notes.txt").write_text("not a photo")
    os.mkfifo(product / "pipe.jpg")

    config = tmp_path / "ho-import.env"
    config.write_text("PHOTO_SYNC_HO_MAX_PHOTO_BYTES=30000\n")
    _, cursor = feed(ho, store)
    result = ho.cli("--config", str(config), "import", str(folder), "--json")
    summary = json.loads(result.stdout)
    assert (summary["created"], summary["updated"], summary["unchanged"]) == (2, 0, 0)
    assert summary["changed"] is True
    reasons = {Path(item["path"]).name: item["reason"] for item in summary["skipped"]}
    assert set(reasons) == {"secret.jpg", "photo-link.jpg", "linked-folder", "text.jpg",
                            "empty.png", "huge.jpg", "notes.txt", "pipe.jpg"}
    assert "symbolic link" in reasons["secret.jpg"]
    assert "symbolic link" in reasons["photo-link.jpg"]
    assert "symbolic link" in reasons["linked-folder"]
    assert "not a JPEG, PNG, WebP or GIF" in reasons["text.jpg"]
    assert "empty" in reasons["empty.png"]
    assert "PHOTO_SYNC_HO_MAX_PHOTO_BYTES" in reasons["huge.jpg"]
    assert "not an image file name" in reasons["notes.txt"]
    assert "not a regular file" in reasons["pipe.jpg"]
    assert "do-not-ship-me" not in result.stdout + result.stderr

    # What stores see: the two images, typed by their bytes; nothing else.
    rows, _ = feed(ho, store, cursor)
    by_name = {row["filename"]: row for row in rows.values()}
    assert set(by_name) == {"good.jpg", "really-a-png.jpg"}
    assert by_name["really-a-png.jpg"]["content_type"] == "image/png"
    assert by_name["good.jpg"]["content_type"] == "image/jpeg"
    for row in rows.values():
        data = store.get(f"{ho.api}/sync/product-photos/{row['id']}/download/").content
        assert secret_bytes not in data

    # The same folder again: nothing changes, the same files are named; the text says so too.
    again = ho.cli("--config", str(config), "import", str(folder), "--json")
    again_summary = json.loads(again.stdout)
    assert (again_summary["changed"], again_summary["unchanged"]) == (False, 2)
    assert again_summary["skipped"] == summary["skipped"]
    text = ho.cli("--config", str(config), "import", str(folder)).stdout
    assert "skipped 8" in text
    assert any(line.startswith("skipped ") and "secret.jpg" in line and "symbolic link" in line
               for line in text.splitlines())


def test_catalog_commands_need_no_s3_settings(ho, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTO_SYNC_HO_")}
    env["PHOTO_SYNC_HO_DATABASE_URL"] = ho.database_url

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "photo-sync-ho"), *args], env=env, capture_output=True,
                              text=True, timeout=120)

    store_id = str(uuid.uuid4())
    assert run("store", "add", store_id).returncode == 0
    assert run("store", "disable", store_id, "--json").returncode == 0
    listed = run("store", "list", "--json")
    assert listed.returncode == 0 and store_id in listed.stdout
    assert run("delete", str(uuid.uuid4())).returncode == 1  # unknown photo, not a config error
    needs_s3 = run("import", str(tmp_path))
    assert needs_s3.returncode == 2 and "PHOTO_SYNC_HO_S3_ENDPOINT" in needs_s3.stderr
    assert "Traceback" not in needs_s3.stderr


def test_a_held_lock_ends_a_cli_command_with_an_error_not_a_hang(ho, tmp_path):
    import psycopg
    store_id, _ = ho.add_store("locked")
    config = tmp_path / "ho-lock.env"
    config.write_text("PHOTO_SYNC_HO_LOCK_TIMEOUT_MS=300\n")
    with psycopg.connect(ho.database_url) as holder:
        holder.execute("LOCK TABLE sync_store IN ACCESS EXCLUSIVE MODE")
        # Bounded by subprocess's timeout: the old code waited for as long as the lock held.
        result = ho.cli("--config", str(config), "store", "disable", store_id, check=False)
        holder.rollback()
    assert result.returncode == 2, result.stderr
    assert "lock timeout" in result.stderr and "PHOTO_SYNC_HO_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(ho.cli("store", "disable", store_id, "--json").stdout)["changed"] is True


# Stores -----------------------------------------------------------------------------------

def test_store_add_prints_a_secret_that_gets_a_token_once(ho):
    store_id = str(uuid.uuid4())
    result = ho.cli("store", "add", store_id, "--name", "Store 12")
    secret = result.stdout.split()[-1]
    assert len(secret) >= 32
    assert ho.list_photos(ho.ask_token(store_id, secret).json()["access"]).status_code == 200
    again = ho.cli("store", "add", store_id, check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    # The first secret is still the one that works.
    assert ho.ask_token(store_id, secret).status_code == 200


def test_store_disable_stops_new_and_existing_tokens(ho):
    store_id, secret = ho.add_store("to-disable")
    token = ho.token(store_id)
    assert ho.list_photos(token).status_code == 200
    assert "disabled" in ho.cli("store", "disable", store_id).stdout
    error_body(ho.ask_token(store_id, secret), 401)
    error_body(ho.list_photos(token), 401)
    unknown = ho.cli("store", "disable", str(uuid.uuid4()), check=False)
    assert unknown.returncode == 1


def test_store_rotate_secret_retires_the_old_secret_and_its_tokens(ho):
    store_id, old_secret = ho.add_store("to-rotate")
    old_token = ho.token(store_id)
    result = ho.cli("store", "rotate-secret", store_id)
    new_secret = result.stdout.split()[-1]
    assert new_secret != old_secret
    error_body(ho.ask_token(store_id, old_secret), 401)
    error_body(ho.list_photos(old_token), 401)
    fresh = ho.ask_token(store_id, new_secret)
    assert fresh.status_code == 200
    assert ho.list_photos(fresh.json()["access"]).status_code == 200
    assert ho.cli("store", "rotate-secret", str(uuid.uuid4()), check=False).returncode == 1


def store_set(ho, store_id: str, secret: str, name: str = "Store 7", *extra: str):
    return ho.cli("store", "set", store_id, "--name", name, "--secret-stdin", *extra,
                  input=secret + "\n").stdout.strip()


def test_store_set_creates_and_updates_idempotently(ho):
    store_id = str(uuid.uuid4())
    secret = "vault-secret-" + uuid.uuid4().hex

    assert store_set(ho, store_id, secret) == f"created store {store_id}"
    token = ho.ask_token(store_id, secret).json()["access"]
    assert store_set(ho, store_id, secret) == f"unchanged store {store_id}"
    assert ho.list_photos(token).status_code == 200  # unchanged keeps tokens working
    assert store_set(ho, store_id, secret, "Store 7 (renamed)") == f"updated store {store_id}"
    assert ho.list_photos(token).status_code == 200  # a rename is not a new secret

    new_secret = "vault-secret-" + uuid.uuid4().hex
    assert store_set(ho, store_id, new_secret) == f"updated store {store_id}"
    error_body(ho.list_photos(token), 401)
    error_body(ho.ask_token(store_id, secret), 401)
    assert ho.ask_token(store_id, new_secret).status_code == 200

    short = ho.cli("store", "set", store_id, "--secret-stdin", input="short\n", check=False)
    assert short.returncode == 2 and "at least 16" in short.stderr


def test_a_disabled_store_stays_disabled_until_store_enable(ho):
    # A rollout runs `store set` for every store in the inventory; an operator's `store
    # disable` must survive it. Fails on the old code, where `store set` set active = true.
    store_id = str(uuid.uuid4())
    secret = "vault-secret-" + uuid.uuid4().hex

    def set_json(value: str) -> dict:
        return json.loads(store_set(ho, store_id, value, "Store 9", "--json"))

    def switch(command: str, target: str = store_id):
        return ho.cli("store", command, target, "--json", check=False)

    assert set_json(secret) == {"store_id": store_id, "result": "created", "changed": True,
                                "enabled": True}
    assert set_json(secret) == {"store_id": store_id, "result": "unchanged", "changed": False,
                                "enabled": True}
    assert ho.ask_token(store_id, secret).status_code == 200

    disabled = switch("disable")
    assert disabled.returncode == 0, disabled.stderr
    assert json.loads(disabled.stdout) == {"store_id": store_id, "changed": True,
                                           "enabled": False}
    assert json.loads(switch("disable").stdout) == {"store_id": store_id, "changed": False,
                                                    "enabled": False}

    # The rollout again, with the same secret and with a new one: still disabled.
    assert set_json(secret) == {"store_id": store_id, "result": "unchanged", "changed": False,
                                "enabled": False}
    error_body(ho.ask_token(store_id, secret), 401)
    new_secret = "vault-secret-" + uuid.uuid4().hex
    assert set_json(new_secret) == {"store_id": store_id, "result": "updated", "changed": True,
                                    "enabled": False}
    error_body(ho.ask_token(store_id, new_secret), 401)
    text = store_set(ho, store_id, new_secret, "Store 9")
    assert text.startswith(f"unchanged store {store_id}") and "store enable" in text

    enabled = switch("enable")
    assert enabled.returncode == 0, enabled.stderr
    assert json.loads(enabled.stdout) == {"store_id": store_id, "changed": True, "enabled": True}
    assert ho.ask_token(store_id, new_secret).status_code == 200
    assert json.loads(switch("enable").stdout) == {"store_id": store_id, "changed": False,
                                                   "enabled": True}
    assert "enabled already" in ho.cli("store", "enable", store_id).stdout

    for command in ("enable", "disable"):
        unknown = switch(command, str(uuid.uuid4()))
        assert unknown.returncode == 1 and "no store" in unknown.stderr
        assert unknown.stdout == "" and "Traceback" not in unknown.stderr


def test_store_list_shows_state_and_reports(ho, tmp_path):
    testbed.make_jpeg(tmp_path / "listed" / str(uuid.uuid4()) / "one.jpg", 8_000, seed=80)
    (photo,) = import_json(ho, tmp_path / "listed")["photos"]
    store_id, _ = ho.add_store("listed")
    reported = ho.session(store_id).post(f"{ho.api}/sync/product-photos/status/", json={
        "sync_batch": [{"photo_id": photo["id"], "status": "synced", "version": 1}]})
    assert reported.status_code == 200
    disabled, _ = ho.add_store("listed-disabled")
    ho.cli("store", "disable", disabled)
    stores = {row["id"]: row for row in json.loads(ho.cli("store", "list", "--json").stdout)}
    assert (stores[store_id]["name"], stores[store_id]["active"], stores[store_id]["synced"]) \
        == ("listed", True, 1)
    assert stores[disabled]["active"] is False
    text = ho.cli("store", "list").stdout
    assert any(store_id in line and "active" in line and "synced=1" in line
               for line in text.splitlines())


def test_store_set_many_registers_a_fleet_in_one_transaction(ho):
    # What the ho_sync_api role runs once per rollout instead of one `store set` per store.
    ids = [str(uuid.uuid4()) for _ in range(3)]
    secrets_ = ["vault-secret-" + uuid.uuid4().hex for _ in ids]
    fleet_list = [{"store_id": i, "name": f"Store {n}", "secret": s}
                  for n, (i, s) in enumerate(zip(ids, secrets_))]

    def set_many(entries, check=True):
        return ho.cli("store", "set-many", "--json", input=json.dumps(entries), check=check)

    # Check mode first: it says what it would create, and writes nothing.
    dry = ho.cli("store", "set-many", "--json", "--dry-run", input=json.dumps(fleet_list))
    assert json.loads(dry.stdout) == {"changed": True, "created": ids, "updated": [],
                                      "enabled": [], "disabled_now": [], "unchanged": 0,
                                      "disabled": [], "dry_run": True}
    error_body(ho.ask_token(ids[0], secrets_[0]), 401)

    first = json.loads(set_many(fleet_list).stdout)
    assert first == {"changed": True, "created": ids, "updated": [], "enabled": [],
                     "disabled_now": [], "unchanged": 0, "disabled": [], "dry_run": False}
    assert all(ho.ask_token(i, s).status_code == 200 for i, s in zip(ids, secrets_))
    assert json.loads(set_many(fleet_list).stdout) == {
        "changed": False, "created": [], "updated": [], "enabled": [], "disabled_now": [],
        "unchanged": 3, "disabled": [], "dry_run": False}

    # One store disabled by an operator, one given a new secret: the list changes only those,
    # and never enables the disabled one.
    assert ho.cli("store", "disable", ids[0]).returncode == 0
    fleet_list[1]["secret"] = "vault-secret-" + uuid.uuid4().hex
    again = json.loads(set_many(fleet_list).stdout)
    assert again == {"changed": True, "created": [], "updated": [ids[1]], "enabled": [],
                     "disabled_now": [], "unchanged": 2, "disabled": [ids[0]], "dry_run": False}
    error_body(ho.ask_token(ids[0], secrets_[0]), 401)
    error_body(ho.ask_token(ids[1], secrets_[1]), 401)
    assert ho.ask_token(ids[1], fleet_list[1]["secret"]).status_code == 200

    # A bad entry anywhere: nothing of the list is written, and the error names the entry
    # and the store, never a secret.
    new_id = str(uuid.uuid4())
    bad = [{"store_id": new_id, "secret": "vault-secret-" + uuid.uuid4().hex},
           {"store_id": ids[2], "secret": "short"}]
    refused = set_many(bad, check=False)
    assert refused.returncode == 2 and "entry 1" in refused.stderr and ids[2] in refused.stderr
    assert "short" not in refused.stderr and bad[0]["secret"] not in refused.stderr
    error_body(ho.ask_token(new_id, bad[0]["secret"]), 401)
    for junk, words in (("not json", "not JSON"), ('{"a": 1}', "JSON list"),
                        ('[{"store_id": "x", "secret": "0123456789abcdefg"}]', "not a UUID"),
                        (json.dumps([fleet_list[2], fleet_list[2]]), "listed twice")):
        result = ho.cli("store", "set-many", input=junk, check=False)
        assert result.returncode == 2 and words in result.stderr, (junk, result.stderr)
    text = ho.cli("store", "set-many", input=json.dumps(fleet_list)).stdout
    assert text.startswith("stores: 0 created, 0 updated, 3 unchanged; disabled")

    # An explicit state enables or disables, in the same transaction; `registered`
    # (no state) leaves a store as an operator set it.
    fleet_list[0]["state"], fleet_list[2]["state"] = "enabled", "disabled"
    states = json.loads(set_many(fleet_list).stdout)
    assert (states["enabled"], states["disabled_now"], states["disabled"], states["unchanged"]) \
        == ([ids[0]], [ids[2]], [ids[2]], 1)
    assert ho.ask_token(ids[0], secrets_[0]).status_code == 200
    error_body(ho.ask_token(ids[2], secrets_[2]), 401)
    fleet_list[1]["state"] = "paused"
    refused = set_many(fleet_list, check=False)
    assert refused.returncode == 2 and "'paused' is not one of" in refused.stderr
