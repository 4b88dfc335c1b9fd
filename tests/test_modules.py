"""The three modules, run for real through `ansible` (localhost) against the live HO API
and PostgreSQL: check mode changes nothing and says what a real run would change, first
run changes, second run does not, failures say what to check, and no secret reaches -vvv
output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from conftest import assert_edge_matches_ho, ho_live_photos

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def ansible(module: str, args: dict, *flags: str) -> tuple[dict, str]:
    """Run one module on localhost; returns (task result, raw output)."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_LIBRARY": str(ROOT / "library"),
           "ANSIBLE_MODULE_UTILS": str(ROOT / "module_utils"),
           "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json",
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
    proc = subprocess.run(
        [str(BIN / "ansible"), "localhost", "-c", "local", "-i", "localhost,",
         "-e", f"ansible_python_interpreter={sys.executable}", "-m", f"photosync.fleet.{module}",
         "-a", json.dumps(args), *flags],
        env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    output = proc.stdout + proc.stderr
    start = proc.stdout.find("{")
    data = json.loads(proc.stdout[start:]) if start >= 0 else {}
    try:
        result = data["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (KeyError, IndexError):
        raise AssertionError(f"no task result from ansible:\n{output[-3000:]}") from None
    return result, output


LEGACY_TABLE = """CREATE TABLE product_photo (
    id uuid PRIMARY KEY, product_id uuid NOT NULL, object_key varchar(512),
    filename varchar(255), size integer, content_type varchar(100), checksum varchar(64),
    version integer, is_primary boolean, sort_order integer, updated_at timestamptz)"""


def _columns(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = "
            "'product_photo'").fetchall()}


def test_pg_bytea_schema_migrates_a_legacy_table(pg):
    url = pg.create_db("mod_schema")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(LEGACY_TABLE)
        conn.execute("INSERT INTO product_photo (id, product_id, filename) VALUES "
                     "(gen_random_uuid(), gen_random_uuid(), 'kept.jpg')")
        conn.execute("CREATE ROLE photo_sync_agent LOGIN")
    args = {"database_url": url, "grant_to": "photo_sync_agent"}

    result, output = ansible("pg_bytea_schema", args, "--check", "--diff")
    assert result["changed"] is True
    assert any("ADD COLUMN image_binary bytea" in q for q in result["queries"])
    assert "ADD COLUMN image_binary bytea" in output  # the diff shows the DDL
    assert "image_binary" not in _columns(url), "check mode must not change the database"

    result, _ = ansible("pg_bytea_schema", args)
    assert result["changed"] is True
    assert {"image_binary", "sync_status", "last_sync_at", "sync_error"} <= _columns(url)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT filename, sync_status FROM product_photo").fetchone()
        storage = conn.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = "
                               "'product_photo'::regclass AND attname = 'image_binary'").fetchone()
        indexes = {r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'product_photo'")}
        granted = conn.execute("SELECT has_table_privilege('photo_sync_agent', "
                               "'photo_sync_outbox', 'INSERT')").fetchone()[0]
    assert row == ("kept.jpg", "pending"), "existing rows are kept and start pending"
    assert storage == ("e",)
    assert {"product_photo_sync_status_idx", "product_photo_last_sync_at_idx"} <= indexes
    assert granted

    result, _ = ansible("pg_bytea_schema", args)
    assert result["changed"] is False and result["queries"] == []
    result, _ = ansible("pg_bytea_schema", args, "--check")
    assert result["changed"] is False

    # A reader (the store's photo server) gets SELECT on the photo table and nothing else.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE ROLE photo_sync_reader LOGIN")
    reader = {**args, "grant_select_to": ["photo_sync_reader"]}
    result, _ = ansible("pg_bytea_schema", reader)
    assert result["changed"] is True
    assert result["queries"] == ['GRANT SELECT ON "product_photo" TO "photo_sync_reader"']
    with psycopg.connect(url) as conn:
        may = {priv: conn.execute("SELECT has_table_privilege('photo_sync_reader', "
                                  "'product_photo', %s)", (priv,)).fetchone()[0]
               for priv in ("SELECT", "INSERT", "UPDATE", "DELETE")}
        outbox = conn.execute("SELECT has_table_privilege('photo_sync_reader', "
                              "'photo_sync_outbox', 'SELECT')").fetchone()[0]
    assert may == {"SELECT": True, "INSERT": False, "UPDATE": False, "DELETE": False}
    assert outbox is False
    result, _ = ansible("pg_bytea_schema", reader)
    assert result["changed"] is False

    # absent keeps the bytes unless drop_data is set
    result, _ = ansible("pg_bytea_schema", {"database_url": url, "state": "absent"})
    assert result["changed"] is True
    cols = _columns(url)
    assert "image_binary" in cols and "sync_status" not in cols and "filename" in cols
    result, _ = ansible("pg_bytea_schema", {"database_url": url, "state": "absent",
                                            "drop_data": True})
    assert result["changed"] is True and "image_binary" not in _columns(url)


def test_pg_bytea_schema_failures_are_clear(pg):
    url = pg.create_db("mod_schema_fail")
    result, output = ansible("pg_bytea_schema", {"database_url": url, "grant_to": "nobody_here"})
    assert result.get("failed") and "nobody_here" in result["msg"]
    assert "does not exist" in result["msg"]
    result, output = ansible("pg_bytea_schema", {"database_url": url,
                                                 "grant_select_to": ["no_reader_here"]})
    assert result.get("failed") and "no_reader_here" in result["msg"]
    assert "does not exist" in result["msg"]
    result, output = ansible("pg_bytea_schema", {"database_url": url, "table": "Bad-Name"})
    assert result.get("failed") and "Bad-Name" in result["msg"]
    result, output = ansible("pg_bytea_schema", {
        "database_url": "postgresql://postgres@127.0.0.1:1/none"})
    assert result.get("failed") and "cannot use the database" in result["msg"]
    assert "check database_url" in result["msg"]
    assert "Traceback" not in output
    result, output = ansible("pg_bytea_schema", {"database_url": url, "table": "Bad-Name",
                                                 "state": "reset"})
    assert result.get("failed") and "Bad-Name" in result["msg"]
    assert "Traceback" not in output


@pytest.fixture(scope="module")
def module_ho(ho_stack, photo_factory):
    ho = ho_stack("modules")
    ho.import_dir(photo_factory(12, seed=7, min_kb=20, max_kb=60, mean_kb=30))
    return ho


def test_photo_sync_pull_and_report(module_ho, make_edge, tmp_path):
    edge = make_edge(module_ho)
    config = edge.write_config(tmp_path / "edge.env")
    args = {"config": str(config), "mode": "full", "report": False}

    result, _ = ansible("photo_sync_pull", args, "--check")
    assert "plan" in result, "roles read `plan` in check mode"
    assert edge.photos() == {}, "check mode downloads and writes nothing"

    result, _ = ansible("photo_sync_pull", args)
    assert result["changed"] is True, result
    assert result["summary"]["downloaded"] == 12 and result["summary"]["failed"] == 0
    assert_edge_matches_ho(edge, module_ho)

    result, _ = ansible("photo_sync_pull", args)
    assert result["changed"] is False
    assert result["summary"]["unchanged"] == 12
    result, _ = ansible("photo_sync_pull", {**args, "mode": "incremental"}, "--check")
    assert result["changed"] is False and result["summary"]["downloaded"] == 0

    # Check mode says a delivery is due (it used to say "not changed"), and sends nothing.
    result, _ = ansible("photo_sync_report", {"config": str(config)}, "--check")
    assert result["changed"] is True and result["reported"] == 12 and result["pending"] == 12
    with module_ho.catalog() as conn:
        n = conn.execute("SELECT count(*) AS n FROM photo_sync_status WHERE store_id = %s",
                         (edge.store_id,)).fetchone()["n"]
    assert n == 0, "check mode delivers nothing"
    result, _ = ansible("photo_sync_report", {"config": str(config)})
    assert result["changed"] is True and result["reported"] == 12 and result["pending"] == 0
    with module_ho.catalog() as conn:
        n = conn.execute("SELECT count(*) AS n FROM photo_sync_status WHERE store_id = %s AND "
                         "status = 'synced'", (edge.store_id,)).fetchone()["n"]
    assert n == 12
    result, _ = ansible("photo_sync_report", {"config": str(config)})
    assert result["changed"] is False and result["reported"] == 0
    result, _ = ansible("photo_sync_report", {"config": str(config)}, "--check")
    assert result["changed"] is False and result["reported"] == 0


def test_photo_sync_pull_failures_are_clear_and_secret_free(module_ho, make_edge, pg):
    edge = make_edge(module_ho)
    db_password = "DbPw-should-never-show-9f2c"
    url = edge.database_url.replace("postgres@", f"postgres:{db_password}@")
    wrong = {"database_url": url, "ho_url": module_ho.url, "store_id": edge.store_id,
             "store_secret": "wrong-secret-never-shown-7d1e"}
    result, output = ansible("photo_sync_pull", wrong, "-vvv")
    assert result.get("failed")
    assert "refused the credentials" in result["msg"] and "STORE_SECRET" in result["msg"]
    assert "Traceback" not in output
    assert "wrong-secret-never-shown-7d1e" not in output
    assert db_password not in output

    good = {**wrong, "store_secret": edge.secret}
    result, output = ansible("photo_sync_pull", good, "-vvv")
    assert result["changed"] is True and result["summary"]["downloaded"] == 12
    assert edge.secret not in output and db_password not in output

    unreachable = {**good, "ho_url": "http://127.0.0.1:9", "retries": 0, "timeout": 2}
    result, output = ansible("photo_sync_pull", unreachable)
    assert result.get("failed") and "cannot reach HO API at http://127.0.0.1:9" in result["msg"]
    assert "Traceback" not in output

    result, output = ansible("photo_sync_pull", {"ho_url": module_ho.url})
    assert result.get("failed") and "database_url" in result["msg"]


def test_photo_sync_pull_bandwidth_limit_takes_the_agents_forms(module_ho, make_edge,
                                                                tmp_path):
    edge = make_edge(module_ho)
    args = {"config": str(edge.write_config(tmp_path / "edge.env")), "report": False}
    # A timetable (rates high enough not to slow the test), as the agent's setting takes it.
    result, output = ansible("photo_sync_pull", {**args, "mode": "full",
                                                 "bandwidth_limit": "00:00,256M 12:00,off"})
    assert result["changed"] is True and result["summary"]["downloaded"] == 12, output
    # An integer (JSON, as YAML gives it) still means bytes per second.
    result, output = ansible("photo_sync_pull", {**args, "bandwidth_limit": 268435456})
    assert result.get("failed") is not True and result["summary"]["status"] == "ok", output
    bad, output = ansible("photo_sync_pull", {**args, "bandwidth_limit": "08:00,512 20:00,off"})
    assert bad.get("failed") and "entry '08:00,512'" in bad["msg"], output
    assert "bandwidth_limit=" in bad["msg"] and "Traceback" not in output


def test_pg_bytea_schema_reset_is_the_rollback(module_ho, make_edge, pg):
    """The rollback's reset through the module: check mode counts and changes nothing, the
    real run resets and clears, the database URL never shows, the next rollout heals."""
    edge = make_edge(module_ho)
    result, _ = edge.pull("full", "--no-report")
    assert result.returncode == 0, result.stderr
    db_password = "DbPw-reset-never-shows-5e1a"
    url = edge.database_url.replace("postgres@", f"postgres:{db_password}@")
    args = {"database_url": url, "state": "reset", "clear_binary": True}

    result, output = ansible("pg_bytea_schema", args, "--check", "-vvv")
    assert (result["changed"], result["reset"], result["cleared"]) == (True, 12, 12)
    assert len(result["queries"]) == 2
    assert db_password not in output and "Traceback" not in output
    assert {s for _, _, s, _ in edge.photos().values()} == {"synced"}, "check mode changes nothing"

    result, output = ansible("pg_bytea_schema", args, "-vvv")
    assert (result["changed"], result["reset"], result["cleared"]) == (True, 12, 12)
    assert db_password not in output
    held = edge.photos()
    assert len(held) == 12 and {(s, d) for _, _, s, d in held.values()} == {("pending", None)}

    result, _ = ansible("pg_bytea_schema", args)
    assert (result["changed"], result["reset"], result["cleared"]) == (False, 0, 0)

    result, summary = edge.pull("full", "--no-report")
    assert result.returncode == 0 and summary["downloaded"] == 12, result.stderr
    assert_edge_matches_ho(edge, module_ho)


def _ids_in(value) -> set[str]:
    """Every string anywhere in a nested result (the ids in `plan`, whatever its shape)."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return set().union(*(_ids_in(v) for v in value)) if value else set()
    return set()


def test_photo_sync_pull_check_mode_tells_the_truth(module_ho, make_edge, tmp_path):
    """Check mode gives the counts the real run then produces (issue 8), `changed` from the
    engine, and `plan` naming the photos it would download."""
    edge = make_edge(module_ho)
    config = edge.write_config(tmp_path / "edge.env")
    args = {"config": str(config), "mode": "full", "report": False}

    check, _ = ansible("photo_sync_pull", args, "--check")
    assert edge.photos() == {}, "check mode downloads and writes nothing"
    assert check["changed"] is True
    assert check["summary"]["downloaded"] == 12 and check["summary"]["bytes"] > 0
    assert set(ho_live_photos(module_ho)) <= _ids_in(check["plan"])

    real, _ = ansible("photo_sync_pull", args)
    assert real["changed"] is True
    for count in ("listed", "downloaded", "unchanged", "updated", "deleted", "failed", "bytes"):
        assert check["summary"][count] == real["summary"][count], count

    again, _ = ansible("photo_sync_pull", args, "--check")
    assert again["changed"] is False and again["summary"]["downloaded"] == 0
    assert not (_ids_in(again["plan"]) & set(ho_live_photos(module_ho)))


def test_photo_sync_verify_reports_drift_repairs_and_the_pull_heals(module_ho, make_edge,
                                                                     tmp_path):
    """Check mode names what differs and changes nothing; the real run marks it (changed,
    not failed); the next incremental pull downloads it; then the store matches HO."""
    edge = make_edge(module_ho)
    config = edge.write_config(tmp_path / "edge.env")
    result, _ = edge.pull("full", "--no-report")
    assert result.returncode == 0, result.stderr
    args = {"config": str(config)}

    clean, _ = ansible("photo_sync_verify", args)
    assert (clean["changed"], clean["matches"], clean["repaired"]) == (False, True, 0)
    assert clean["listed"] == clean["held"] == 12

    gone, corrupt = sorted(edge.photos())[:2]
    with edge.db() as conn:
        conn.execute("DELETE FROM product_photo WHERE id = %s", (gone,))
        conn.execute("UPDATE product_photo SET image_binary = 'not the photo' WHERE id = %s",
                     (corrupt,))

    check, output = ansible("photo_sync_verify", args, "--check")
    assert "failed" not in check, output[-2000:]
    assert (check["changed"], check["matches"], check["repaired"]) == (True, False, None)
    assert check["counts"] == {"missing": 1, "extra": 0, "stale": 0, "corrupt": 1}
    assert (check["ids"]["missing"], check["ids"]["corrupt"]) == ([gone], [corrupt])
    assert edge.photos()[corrupt][2] == "synced", "check mode marks nothing"

    failing, _ = ansible("photo_sync_verify", {**args, "fail_on_drift": True}, "--check")
    assert failing.get("failed") and "1 missing, 1 corrupt" in failing["msg"]

    real, _ = ansible("photo_sync_verify", args)
    assert (real["changed"], real["matches"], real["repaired"]) == (True, False, 2)
    assert edge.photos()[corrupt][2] == "pending"

    result, summary = edge.pull("incremental", "--no-report")
    assert result.returncode == 0, result.stderr
    assert summary["downloaded"] == 2
    assert_edge_matches_ho(edge, module_ho)
    after, _ = ansible("photo_sync_verify", args, "--check")
    assert (after["changed"], after["matches"]) == (False, True)
    assert after["counts"] == {"missing": 0, "extra": 0, "stale": 0, "corrupt": 0}


def test_photo_sync_verify_failures_are_errors_not_drift(module_ho, make_edge):
    """HO unreachable fails the task with what to check; the secret never shows."""
    edge = make_edge(module_ho)
    args = {"database_url": edge.database_url, "ho_url": "http://127.0.0.1:9",
            "store_id": edge.store_id, "store_secret": edge.secret, "retries": 0,
            "timeout": 2}
    result, output = ansible("photo_sync_verify", args, "-vvv")
    assert result.get("failed")
    assert result["msg"].startswith("verify of the store against HO stopped: ")
    assert "cannot reach HO API at http://127.0.0.1:9" in result["msg"]
    assert "matches" not in result, "an error is not a verdict about drift"
    assert edge.secret not in output and "Traceback" not in output
