# -*- coding: utf-8 -*-
"""`ansible-test units` for every photosync.fleet module's entry: a task that cannot run
fails with what to do, before it touches anything, and never echoes a secret. The
engine itself (photo_sync, against a real PostgreSQL) is tested by the project's pytest
suite; here the package is absent, as on a controller without the store's venv."""

from __future__ import annotations

import importlib
import json

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.photosync.fleet.plugins.module_utils import photo_sync_common as common

SECRET = "unit-test-password-3141"
# Each module with the options it requires besides a database.
MODULES = {
    "pg_bytea_schema": {},
    "photo_sync_pull": {},
    "photo_sync_report": {},
    "photo_sync_store": {"stores": [{"store_id": "store-001", "secret": SECRET}]},
    "photo_sync_verify": {},
}


def run_main(name, args, capsys):
    module = importlib.import_module("ansible_collections.photosync.fleet.plugins.modules." + name)
    with patch_module_args(args), pytest.raises(SystemExit) as exited:
        module.main()
    result = json.loads(capsys.readouterr().out)
    return exited.value.code, result


@pytest.mark.parametrize("name", MODULES)
def test_without_the_photo_sync_package_the_task_names_the_interpreter(name, monkeypatch,
                                                                       capsys):
    monkeypatch.setattr(common, "HAS_PHOTO_SYNC", False)
    args = dict(MODULES[name], database_url="postgresql://store:%s@db/store" % SECRET)
    code, result = run_main(name, args, capsys)
    assert code == 1 and result["failed"]
    assert "photo_sync" in result["msg"]
    assert "ansible_python_interpreter" in result["msg"]
    assert SECRET not in json.dumps(result)


@pytest.mark.parametrize("name", MODULES)
def test_a_task_without_a_database_says_which_options_give_one(name, capsys):
    code, result = run_main(name, dict(MODULES[name]), capsys)
    assert code == 1 and result["failed"]
    assert "one of the following is required: database_url, config" in result["msg"]
