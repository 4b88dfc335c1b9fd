# -*- coding: utf-8 -*-
"""Shared argument specs and helpers for the photo_sync modules.

The modules are thin: argument handling, check mode, diff and result shaping
around calls into the photo_sync package, which must be importable by the
module's interpreter (the venv the edge_photo_sync role installs).
"""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import missing_required_lib

try:
    import photo_sync  # noqa: F401
    HAS_PHOTO_SYNC = True
    PHOTO_SYNC_IMPORT_ERROR = None
except ImportError:
    HAS_PHOTO_SYNC = False
    PHOTO_SYNC_IMPORT_ERROR = traceback.format_exc()

DATABASE_ARGS = dict(
    config=dict(type="path"),
    database_url=dict(type="str", no_log=True),
)

HO_ARGS = dict(
    ho_url=dict(type="str"),
    store_id=dict(type="str"),
    store_secret=dict(type="str", no_log=True),
    timeout=dict(type="float"),
    retries=dict(type="int"),
)


def argument_spec(*parts, **extra):
    spec = {}
    for part in parts:
        spec.update(part)
    spec.update(extra)
    return spec


def require_photo_sync(module):
    if not HAS_PHOTO_SYNC:
        module.fail_json(
            msg=missing_required_lib(
                "photo_sync", reason="run this module with the photo-sync venv's interpreter "
                "(ansible_python_interpreter: /opt/photo-sync/venv/bin/python)"),
            exception=PHOTO_SYNC_IMPORT_ERROR)


def edge_settings(module, need_ho=True, **extra_overrides):
    """EdgeSettings from the `config` file, the environment and the module's options
    (options win). Fails the module with a message naming what is missing."""
    from photo_sync.config import ConfigError
    from photo_sync.edge.settings import EdgeSettings

    p = module.params
    overrides = {
        "DATABASE_URL": p.get("database_url"),
        "HO_URL": p.get("ho_url"),
        "STORE_ID": p.get("store_id"),
        "STORE_SECRET": p.get("store_secret"),
        "TIMEOUT": p.get("timeout"),
        "RETRIES": p.get("retries"),
    }
    overrides.update(extra_overrides)
    try:
        return EdgeSettings.load(p.get("config"), overrides=overrides, need_ho=need_ho)
    except ConfigError as exc:
        # Settings are named by their environment names; say which option sets each.
        module.fail_json(msg="invalid photo-sync settings: %s (module options: config, "
                             "database_url, ho_url, store_id, store_secret)" % exc)
