"""photo_sync_store, run for real through `ansible` (localhost) against a live HO: the
catalog's stores become what the list says, check mode and --diff tell the truth and
write nothing, a second run changes nothing, and no secret reaches -vvv output or the
diff. This is the module the ho_sync_api role registers the fleet with."""

from __future__ import annotations

import uuid

from test_ho_cli import error_body
from test_modules import ansible


def _fleet(count: int) -> list[dict]:
    return [{"store_id": str(uuid.uuid4()), "name": f"Store {n}",
             "secret": "vault-secret-" + uuid.uuid4().hex} for n in range(count)]


def _active(ho) -> dict[str, bool]:
    with ho.catalog() as conn:
        return {str(r["id"]): r["active"] for r in conn.execute(
            "SELECT id, active FROM sync_store").fetchall()}


def test_stores_become_what_the_list_says(ho_stack, tmp_path):
    ho = ho_stack("modstore")
    config = tmp_path / "ho.env"
    config.write_text(f"PHOTO_SYNC_HO_DATABASE_URL={ho.database_url}\n")
    config.chmod(0o600)
    fleet = _fleet(3)
    ids = [s["store_id"] for s in fleet]
    args = {"config": str(config), "stores": fleet}

    # Check mode with --diff: says what it would create, writes nothing.
    result, output = ansible("photo_sync_store", args, "--check", "--diff")
    assert result["changed"] is True and result["created"] == ids, result
    assert f"{ids[0]} name=Store 0 enabled=true" in output
    assert not set(ids) & set(_active(ho))
    error_body(ho.ask_token(ids[0], fleet[0]["secret"]), 401)

    result, _ = ansible("photo_sync_store", args)
    assert (result["changed"], result["created"], result["unchanged"]) == (True, ids, 0)
    assert all(ho.ask_token(s["store_id"], s["secret"]).status_code == 200 for s in fleet)

    again, _ = ansible("photo_sync_store", args)
    assert (again["changed"], again["unchanged"]) == (False, 3)

    # An operator disabled store 0; the list gives store 1 a new secret and disables
    # store 2. Store 0 stays disabled (registered never enables), and the diff names the
    # new secret without showing it.
    assert ho.cli("store", "disable", ids[0]).returncode == 0
    old_secret = fleet[1]["secret"]
    fleet[1]["secret"] = "vault-secret-" + uuid.uuid4().hex
    fleet[2]["state"] = "disabled"
    result, output = ansible("photo_sync_store", args, "--diff", "-vvv")
    assert (result["updated"], result["disabled"], sorted(result["inactive"])) == (
        [ids[1]], [ids[2]], sorted([ids[0], ids[2]]))
    assert f"{ids[1]} name=Store 1 enabled=true secret=changed" in output
    for s in fleet:
        assert s["secret"] not in output, "a store secret reached -vvv output"
    assert old_secret not in output
    active = _active(ho)
    assert (active[ids[0]], active[ids[1]], active[ids[2]]) == (False, True, False)
    error_body(ho.ask_token(ids[1], old_secret), 401)
    error_body(ho.ask_token(ids[2], fleet[2]["secret"]), 401)

    # Enabling is explicit.
    fleet[0]["state"] = "enabled"
    result, _ = ansible("photo_sync_store", args)
    assert result["enabled"] == [ids[0]]
    assert ho.ask_token(ids[0], fleet[0]["secret"]).status_code == 200


def test_a_bad_entry_changes_nothing_and_names_the_store(ho_stack, tmp_path):
    ho = ho_stack("modstorebad")
    fleet = _fleet(2)
    fleet[1]["secret"] = "too-short"
    result, output = ansible("photo_sync_store",
                             {"database_url": ho.database_url, "stores": fleet})
    assert result.get("failed") is True
    assert "entry 1" in result["msg"] and fleet[1]["store_id"] in result["msg"]
    assert "too-short" not in output and fleet[0]["secret"] not in output
    assert fleet[0]["store_id"] not in _active(ho), "half a list was written"

    # An unreachable catalog says which option to check.
    result, _ = ansible("photo_sync_store", {"database_url": "postgresql://127.0.0.1:1/none",
                                             "stores": _fleet(1)})
    assert result.get("failed") is True and "database_url" in result["msg"]
