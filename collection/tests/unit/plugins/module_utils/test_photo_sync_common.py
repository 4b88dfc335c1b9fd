# -*- coding: utf-8 -*-
"""`ansible-test units` for the helpers every photosync.fleet module shares: what a task
sends to the engine, and how the engine's words reach the operator."""

from __future__ import annotations

from ansible_collections.photosync.fleet.plugins.module_utils import photo_sync_common as common


def test_options_become_engine_settings_and_unset_ones_override_nothing():
    overrides = common.settings_overrides(
        {"database_url": "postgresql:///store", "allow_http": False, "retries": None,
         "timeout": 7.5})
    # EdgeSettings reads booleans as words; an option the task left out must not mask
    # the config file's value with an empty one.
    assert overrides == {"DATABASE_URL": "postgresql:///store", "ALLOW_HTTP": "false",
                         "TIMEOUT": 7.5}


def test_a_module_override_wins_over_its_option():
    overrides = common.settings_overrides({"ho_url": "https://ho.example"},
                                          HO_URL="https://other.example")
    assert overrides["HO_URL"] == "https://other.example"


def test_engine_messages_name_the_option_that_sets_a_setting():
    text = "PHOTO_SYNC_EDGE_HO_URL is not set; PHOTO_SYNC_EDGE_RETRIES=x is not a number"
    # A setting named alone gets its option; one quoted with its value stays as it was.
    assert common.name_options(text) == (
        "ho_url (PHOTO_SYNC_EDGE_HO_URL) is not set; PHOTO_SYNC_EDGE_RETRIES=x is not a number")


def test_argument_spec_keeps_every_part_and_the_modules_own_options():
    spec = common.argument_spec(common.DATABASE_ARGS, common.HO_ARGS, mode=dict(type="str"))
    assert set(spec) == set(common.DATABASE_ARGS) | set(common.HO_ARGS) | {"mode"}
    # The secrets a module takes are never logged.
    assert spec["database_url"]["no_log"] and spec["store_secret"]["no_log"]
