"""The modules' helpers, and their `main()` run in this process with
`patch_module_args` against a real PostgreSQL: the one error model (an engine
failure is a task failure that says what to do, never a traceback), honest
check mode and `pg_bytea_schema: state: reset`."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args

from photo_sync.edge import schema
from photo_sync.edge.engine import RunSummary, run_sync
from photo_sync.edge.verify import VerifyResult
from photo_sync.errors import ConfigError, HOUnreachable, LockHeld, SchemaMissing

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# The modules import their helpers as Ansible ships them to a target.
common = _load("ansible.module_utils.photo_sync_common", ROOT / "module_utils" /
               "photo_sync_common.py")
pg_bytea_schema = _load("pg_bytea_schema", ROOT / "library" / "pg_bytea_schema.py")
photo_sync_pull = _load("photo_sync_pull", ROOT / "library" / "photo_sync_pull.py")
photo_sync_report = _load("photo_sync_report", ROOT / "library" / "photo_sync_report.py")
photo_sync_verify = _load("photo_sync_verify", ROOT / "library" / "photo_sync_verify.py")
photo_sync_store = _load("photo_sync_store", ROOT / "library" / "photo_sync_store.py")


@pytest.fixture
def run_main(capsys):
    """Run a module's main() with these options; returns its JSON result."""

    def run(module, args: dict, check: bool = False) -> dict:
        with patch_module_args({**args, "_ansible_check_mode": check}):
            with pytest.raises(SystemExit):
                module.main()
        out = capsys.readouterr().out
        assert "Traceback" not in out
        return json.loads(out)

    return run


# Pure helpers -------------------------------------------------------------------------

@pytest.mark.parametrize("params, expected", [
    ({}, {}),
    ({"database_url": "postgresql:///edge", "ho_url": None}, {"DATABASE_URL": "postgresql:///edge"}),
    ({"ca_bundle": "/etc/ssl/ho-ca.pem"}, {"CA_BUNDLE": "/etc/ssl/ho-ca.pem"}),
    ({"allow_http": True}, {"ALLOW_HTTP": "true"}),
    ({"allow_http": False}, {"ALLOW_HTTP": "false"}),
    ({"timeout": 2.5, "retries": 0}, {"TIMEOUT": 2.5, "RETRIES": 0}),
    ({"store_id": "s", "store_secret": "x", "unrelated": 1},
     {"STORE_ID": "s", "STORE_SECRET": "x"}),
], ids=["nothing", "database-url", "ca-bundle", "allow-http", "deny-http", "zero-is-set",
        "only-known-options"])
def test_settings_overrides_map_options_to_settings(params, expected):
    assert common.settings_overrides(params) == expected


def test_settings_overrides_take_module_specific_extras():
    assert common.settings_overrides({"ho_url": "https://ho"}, CONCURRENCY=3, BANDWIDTH_LIMIT=None
                                     ) == {"HO_URL": "https://ho", "CONCURRENCY": 3}


@pytest.mark.parametrize("exc, expected", [
    (ConfigError("PHOTO_SYNC_EDGE_STORE_ID is not set"),
     "doing it: store_id (PHOTO_SYNC_EDGE_STORE_ID) is not set"),
    (LockHeld("another run holds the lock"), "doing it: another run holds the lock"),
    (SchemaMissing("run `photo-sync-edge schema apply`"),
     "doing it: run `photo-sync-edge schema apply`"),
    (HOUnreachable("cannot reach HO API at https://ho:8443"),
     "doing it: cannot reach HO API at https://ho:8443"),
    (schema.SchemaError("table 'Bad-Name' is not a plain lower-case SQL identifier"),
     "doing it: table 'Bad-Name' is not a plain lower-case SQL identifier"),
    (psycopg.OperationalError("connection refused\nDETAIL: SELECT secret FROM x"),
     "doing it: cannot use the database (connection refused): check database_url and that "
     "PostgreSQL is running"),
    (psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"),
     "doing it: cannot use the database (canceling statement due to lock timeout): check "
     "database_url and that PostgreSQL is running"),
], ids=["config", "lock", "schema-missing", "ho", "bad-identifier", "db-down", "db-lock"])
def test_failure_message_words_every_engine_failure_once(exc, expected):
    assert common.failure_message("doing it", exc) == expected


@pytest.mark.parametrize("text, expected", [
    ("PHOTO_SYNC_EDGE_STORE_ID is not set", "store_id (PHOTO_SYNC_EDGE_STORE_ID) is not set"),
    ("HO refused the credentials: check PHOTO_SYNC_EDGE_STORE_ID and PHOTO_SYNC_EDGE_STORE_SECRET",
     "HO refused the credentials: check store_id (PHOTO_SYNC_EDGE_STORE_ID) and store_secret "
     "(PHOTO_SYNC_EDGE_STORE_SECRET)"),
    ("check PHOTO_SYNC_EDGE_DATABASE_URL and",
     "check database_url (PHOTO_SYNC_EDGE_DATABASE_URL) and"),
    ("PHOTO_SYNC_EDGE_CA_BUNDLE='/x' is not a file",
     "PHOTO_SYNC_EDGE_CA_BUNDLE='/x' is not a file"),
    ("PHOTO_SYNC_EDGE_PAGE_SIZE=0 is below", "PHOTO_SYNC_EDGE_PAGE_SIZE=0 is below"),
    ("PHOTO_SYNC_EDGE_HO_URLS", "PHOTO_SYNC_EDGE_HO_URLS"),
], ids=["missing", "two", "database", "quoted-value", "no-option", "longer-name"])
def test_messages_name_the_module_option(text, expected):
    assert common.name_options(text) == expected


@pytest.mark.parametrize("exc", [ValueError("bug"), KeyError("bug"), TypeError("bug")])
def test_failure_message_lets_bugs_through(exc):
    assert common.failure_message("doing it", exc) is None


@pytest.mark.parametrize("counts, changed, queries", [
    ({"reset": 0, "cleared": 0}, False, []),
    ({"reset": 3, "cleared": 0}, True, ["RESET SQL"]),
    ({"reset": 0, "cleared": 2}, True, ["CLEAR SQL"]),
    ({"reset": 3, "cleared": 2}, True, ["RESET SQL", "CLEAR SQL"]),
])
def test_reset_result(counts, changed, queries):
    result = pg_bytea_schema.reset_result(counts, {"reset": "RESET SQL", "cleared": "CLEAR SQL"})
    assert result == {"changed": changed, "reset": counts["reset"],
                      "cleared": counts["cleared"], "queries": queries}


@pytest.mark.parametrize("reported, pending, check, expected", [
    (0, 12, True, {"changed": True, "reported": 12, "pending": 12}),
    (0, 0, True, {"changed": False, "reported": 0, "pending": 0}),
    (12, 0, False, {"changed": True, "reported": 12, "pending": 0}),
    (0, 5, False, {"changed": False, "reported": 0, "pending": 5}),
], ids=["check-queued", "check-empty", "delivered", "nothing-delivered"])
def test_report_result_check_mode_says_what_it_would_deliver(reported, pending, check, expected):
    assert photo_sync_report.report_result(reported, pending, check) == expected


def _found(**ids) -> dict:
    return VerifyResult(listed=5, held=5, repaired=ids.pop("repaired", None), **ids).as_dict()


@pytest.mark.parametrize("found, check, repair, changed", [
    (_found(), True, True, False),
    (_found(repaired=0), False, True, False),
    # Extras are left to a full pull: nothing for a repair to mark.
    (_found(extra=["e"]), True, True, False),
    (_found(extra=["e"], repaired=0), False, True, False),
    (_found(corrupt=["c"]), True, True, True),
    (_found(stale=["s"]), True, False, False),
    (_found(missing=["m"], stale=["s"], repaired=2), False, True, True),
    (_found(missing=["m"]), False, False, False),
])
def test_verify_result_changed_is_what_the_repair_marks(found, check, repair, changed):
    result = photo_sync_verify.verify_result(found, check, repair)
    assert result["changed"] is changed
    assert result["matches"] is not any(result["counts"].values())
    assert result["ids"]["missing"] == found["missing"]


def test_verify_drift_message_counts_what_differs():
    result = photo_sync_verify.verify_result(_found(missing=["m"], corrupt=["a", "b"]),
                                             True, True)
    msg = photo_sync_verify.drift_message(result)
    assert "1 missing, 2 corrupt" in msg and "stale" not in msg


def test_sync_kwargs_ask_the_engine_for_ids_only_in_check_mode():
    assert photo_sync_pull.sync_kwargs(True, False, True) == dict(
        dry_run=True, force_delete=False, report=True, list_ids=True)
    assert photo_sync_pull.sync_kwargs(False, True, False) == dict(
        dry_run=False, force_delete=True, report=False, list_ids=False)
    # and the real engine accepts what the module passes it
    inspect.signature(run_sync).bind(None, "full", **photo_sync_pull.sync_kwargs(
        True, False, True))


# main() in this process ---------------------------------------------------------------

LEGACY_TABLE = ("CREATE TABLE product_photo (id uuid PRIMARY KEY, product_id uuid NOT NULL, "
                "filename varchar(255))")


def _seed(url: str) -> None:
    """Five photos: 2 synced with bytes, 1 failed with an error, 1 syncing, 1 pending."""
    with psycopg.connect(url, autocommit=True) as conn:
        for status, data, error in [("synced", b"\xff\xd8one", None), ("synced", b"\xff\xd8two",
                                    None), ("failed", None, "HTTP 404"), ("syncing", None, None),
                                    ("pending", None, None)]:
            conn.execute("INSERT INTO product_photo (id, product_id, sync_status, image_binary, "
                         "sync_error) VALUES (gen_random_uuid(), gen_random_uuid(), %s, %s, %s)",
                         (status, data, error))


def _state(url: str) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FILTER (WHERE sync_status = 'pending'), "
            "count(*) FILTER (WHERE image_binary IS NOT NULL), "
            "count(*) FILTER (WHERE sync_error IS NOT NULL) FROM product_photo").fetchone()


def test_reset_check_mode_counts_then_reset_changes(pg, run_main):
    url = pg.create_db("unit_reset")
    result = run_main(pg_bytea_schema, {"database_url": url})
    assert result["changed"] is True
    _seed(url)
    assert _state(url) == (1, 2, 1)
    args = {"database_url": url, "state": "reset", "clear_binary": True}

    result = run_main(pg_bytea_schema, args, check=True)
    assert (result["changed"], result["reset"], result["cleared"]) == (True, 4, 2)
    assert len(result["queries"]) == 2 and "sync_status = 'pending'" in result["queries"][0]
    assert _state(url) == (1, 2, 1), "check mode must not change the database"

    result = run_main(pg_bytea_schema, {**args, "clear_binary": False})
    assert (result["changed"], result["reset"], result["cleared"]) == (True, 4, 0)
    assert _state(url) == (5, 2, 0), "statuses back to pending, errors gone, bytes kept"

    result = run_main(pg_bytea_schema, args)
    assert (result["changed"], result["reset"], result["cleared"]) == (True, 0, 2)
    assert result["queries"] == ['UPDATE "product_photo" SET image_binary = NULL '
                                 "WHERE image_binary IS NOT NULL"]
    assert _state(url) == (5, 0, 0)

    result = run_main(pg_bytea_schema, args)
    assert result == {**result, "changed": False, "reset": 0, "cleared": 0, "queries": []}
    result = run_main(pg_bytea_schema, args, check=True)
    assert result["changed"] is False


@pytest.mark.parametrize("setup", ["legacy-table", "no-table"])
def test_reset_of_a_store_never_migrated_is_zero_not_an_error(pg, run_main, setup):
    url = pg.create_db(f"unit_reset_{setup.replace('-', '_')}")
    if setup == "legacy-table":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(LEGACY_TABLE)
            conn.execute("INSERT INTO product_photo VALUES (gen_random_uuid(), "
                         "gen_random_uuid(), 'kept.jpg')")
    for check in (True, False):
        result = run_main(pg_bytea_schema, {"database_url": url, "state": "reset",
                                            "clear_binary": True}, check=check)
        assert not result.get("failed"), result
        assert (result["changed"], result["reset"], result["cleared"]) == (False, 0, 0)


def test_reset_refuses_while_a_sync_run_holds_the_lock(pg, run_main):
    url = pg.create_db("unit_reset_locked")
    run_main(pg_bytea_schema, {"database_url": url})
    _seed(url)
    # The lock a sync run holds (EdgeStore.acquire_run_lock), from another session.
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext('photo_sync_edge_run'))")
        for check in (True, False):
            result = run_main(pg_bytea_schema, {"database_url": url, "state": "reset"},
                              check=check)
            assert result["failed"] is True
            assert "run is in progress" in result["msg"] and "stop the sync timers" in result["msg"]
    assert _state(url) == (1, 2, 1), "nothing was reset"


@pytest.mark.parametrize("state", ["present", "reset"])
def test_schema_module_failures_name_what_to_fix(pg, run_main, state):
    url = pg.create_db(f"unit_fail_{state}")
    result = run_main(pg_bytea_schema, {"database_url": url, "table": "Bad-Name", "state": state})
    assert result["failed"] is True and "Bad-Name" in result["msg"]
    assert "is not a plain lower-case SQL identifier" in result["msg"]

    password = "DbPw-never-in-a-message-31c7"
    down = f"postgresql://postgres:{password}@127.0.0.1:1/none"
    result = run_main(pg_bytea_schema, {"database_url": down, "state": state})
    assert result["failed"] is True
    assert "cannot use the database" in result["msg"] and "check database_url" in result["msg"]
    assert password not in json.dumps(result)


def test_settings_failures_name_the_module_options(run_main, tmp_path):
    result = run_main(photo_sync_pull, {"config": str(tmp_path / "missing.env")})
    assert result["failed"] is True
    assert "cannot read config file" in result["msg"] and "config" in result["msg"]
    result = run_main(photo_sync_report, {"database_url": "postgresql:///x"})
    assert result["failed"] is True
    assert "store_id (PHOTO_SYNC_EDGE_STORE_ID) is not set" in result["msg"]


def test_tls_options_reach_the_engine_settings(tmp_path, run_main):
    bundle = tmp_path / "ho-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    args = {"database_url": "postgresql:///x", "ho_url": "http://ho.example:8080",
            "store_id": "0b0e2f9a-4c55-4d1c-9d7e-3f1a2b3c4d5e", "store_secret": "s",
            "ca_bundle": str(bundle), "allow_http": True}
    with patch_module_args(args):
        module = AnsibleModule(argument_spec=common.argument_spec(
            common.DATABASE_ARGS, common.HO_ARGS))
        settings = common.edge_settings(module)
    assert str(settings.ca_bundle) == str(bundle)
    assert settings.allow_http is True
    # Without allow_http, the task refuses plain http to a host that is not this one.
    result = run_main(photo_sync_pull, {**args, "allow_http": False})
    assert result["failed"] is True and "http://" in result["msg"]
    assert "ca_bundle" in result["msg"]


@pytest.mark.parametrize("given, windows", [
    (2000000, ((0, 2000000),)),  # an integer from YAML: bytes per second, as before
    (0, ((0, 0),)),
    ("512k", ((0, 512 * 1024),)),
    ("off", ((0, 0),)),
    ("08:00,512k 20:00,off", ((8 * 60, 512 * 1024), (20 * 60, 0))),
], ids=["int-bytes", "int-zero", "rate", "off", "timetable"])
def test_bandwidth_limit_reaches_the_engine_as_the_agent_reads_it(given, windows):
    args = {"database_url": "postgresql:///x", "bandwidth_limit": given}
    with patch_module_args(args):
        module = AnsibleModule(argument_spec=photo_sync_pull.ARGUMENT_SPEC)
        settings = common.edge_settings(module, need_ho=False)
    assert tuple((w.start, w.rate) for w in settings.bandwidth_limit.windows) == windows


@pytest.mark.parametrize("given, words", [
    ("08:00,512 20:00,off", "entry '08:00,512': the rate '512' has no unit"),
    ("20:00,1M 08:00,off", "entry '08:00,off': the times must be in increasing order"),
    ("25:00,1M", "entry '25:00,1M': '25:00' is not a time of day"),
    ("fast", "'fast' is not a rate"),
], ids=["no-unit", "out-of-order", "bad-time", "not-a-rate"])
def test_a_bad_bandwidth_limit_fails_the_task_naming_the_entry(pg, run_main, given, words):
    url = pg.create_db("unit_bwlimit")
    schema.ensure(url)
    result = run_main(photo_sync_pull, {
        "database_url": url, "ho_url": "http://127.0.0.1:9", "store_id":
        "0b0e2f9a-4c55-4d1c-9d7e-3f1a2b3c4d5e", "store_secret": "not-shown-4b1f",
        "bandwidth_limit": given})
    assert result["failed"] is True
    assert result["msg"].startswith(f"invalid photo-sync settings: bandwidth_limit={given!r}")
    assert words in result["msg"]
    with psycopg.connect(url) as conn:  # refused before any run started
        assert conn.execute("SELECT count(*) FROM photo_sync_run").fetchone()[0] == 0


# Documentation ------------------------------------------------------------------------

MODULES = {"pg_bytea_schema": pg_bytea_schema, "photo_sync_pull": photo_sync_pull,
           "photo_sync_report": photo_sync_report, "photo_sync_verify": photo_sync_verify,
           "photo_sync_store": photo_sync_store}


@pytest.fixture(scope="module")
def rendered_docs() -> dict:
    """What `ansible-doc` makes of each module's DOCUMENTATION/EXAMPLES/RETURN."""
    doc = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "-M",
                          str(ROOT / "library"), "--json", *MODULES],
                         capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "ANSIBLE_MODULE_UTILS": str(ROOT / "module_utils")})
    assert doc.returncode == 0, doc.stderr
    assert "WARNING" not in doc.stderr and "ERROR" not in doc.stderr, doc.stderr
    return json.loads(doc.stdout)


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_the_argument_spec(rendered_docs, name):
    options = rendered_docs[name]["doc"]["options"]
    spec = MODULES[name].ARGUMENT_SPEC
    assert set(options) == set(spec)
    for option, arg in spec.items():
        assert options[option]["type"] == arg.get("type", "str"), option
        assert options[option].get("default") == arg.get("default"), option
        assert options[option].get("choices") == arg.get("choices"), option
    assert {o for o, a in spec.items() if a.get("no_log")} <= {"database_url", "store_secret"}
    assert yaml.safe_load(rendered_docs[name]["examples"]), "EXAMPLES is YAML"


@pytest.mark.parametrize("name, options", [
    ("pg_bytea_schema", {"clear_binary", "database_url"}),
    ("photo_sync_pull", {"ca_bundle", "allow_http"}),
    ("photo_sync_report", {"ca_bundle", "allow_http"}),
    ("photo_sync_verify", {"repair", "fail_on_drift", "ca_bundle"}),
])
def test_new_options_are_documented(rendered_docs, name, options):
    docs = rendered_docs[name]["doc"]["options"]
    assert options <= set(docs)
    assert all(docs[option]["description"] for option in options)


def test_reset_state_is_documented(rendered_docs):
    doc = rendered_docs["pg_bytea_schema"]["doc"]
    assert "reset" in doc["options"]["state"]["choices"]
    assert any("state=reset" in line for line in doc["description"])


def test_documented_return_values_are_what_the_modules_return(rendered_docs):
    """Every key a module returns (beyond Ansible's own) is in its RETURN block."""
    own = {"changed", "failed", "msg", "invocation", "diff"}
    returns = {name: set(rendered_docs[name]["return"]) for name in MODULES}
    reset = pg_bytea_schema.reset_result({"reset": 1, "cleared": 1}, {"reset": "", "cleared": ""})
    assert set(reset) - own == returns["pg_bytea_schema"] == {"queries", "reset", "cleared"}
    summary = RunSummary(mode="full", dry_run=True)
    assert set(photo_sync_pull.pull_result(summary, check_mode=True)) - own == \
        returns["photo_sync_pull"]
    assert set(photo_sync_report.report_result(0, 0, check_mode=True)) - own == \
        returns["photo_sync_report"]
    assert set(photo_sync_verify.verify_result(VerifyResult().as_dict(), True, True)) - own == \
        returns["photo_sync_verify"]
