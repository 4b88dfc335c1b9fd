# -*- coding: utf-8 -*-
"""Shared argument specs and helpers for the photo_sync modules.

The modules are thin: argument handling, check mode, diff and result shaping
around calls into the photo_sync package, which must be importable by the
module's interpreter (the venv the edge_photo_sync role installs). Every call
into the package goes through `run_engine`, the one place where an engine
failure becomes a task failure (photo_sync.errors is the one error model).
"""

from __future__ import annotations

import re
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import photo_sync
except ImportError:
    photo_sync = None
    PHOTO_SYNC_IMPORT_ERROR = traceback.format_exc()
else:
    PHOTO_SYNC_IMPORT_ERROR = None
HAS_PHOTO_SYNC = photo_sync is not None

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
    # The timers get PHOTO_SYNC_EDGE_CA_BUNDLE from their environment file; a module
    # run by Ansible does not see that environment, so it takes them as options.
    ca_bundle=dict(type="path"),
    allow_http=dict(type="bool"),
)

# Module option -> EdgeSettings override key (PHOTO_SYNC_EDGE_<key>).
OPTION_SETTINGS = (
    ("database_url", "DATABASE_URL"),
    ("ho_url", "HO_URL"),
    ("store_id", "STORE_ID"),
    ("store_secret", "STORE_SECRET"),
    ("timeout", "TIMEOUT"),
    ("retries", "RETRIES"),
    ("ca_bundle", "CA_BUNDLE"),
    ("allow_http", "ALLOW_HTTP"),
    ("concurrency", "CONCURRENCY"),
    ("bandwidth_limit", "BANDWIDTH_LIMIT"),
    ("max_delete_fraction", "MAX_DELETE_FRACTION"),
)
# A setting named alone (not `NAME=value`, which quotes what a file or option held).
SETTING_NAME = re.compile(r"\bPHOTO_SYNC_EDGE_(%s)\b(?!=)"
                          % "|".join(key for option, key in OPTION_SETTINGS))


def argument_spec(*parts, **extra):
    """One module's argument spec: the shared parts above plus its own options."""
    spec = {}
    for part in parts:
        spec.update(part)
    spec.update(extra)
    return spec


def new_module(spec):
    """The module object every photo_sync module starts from: its argument spec, the
    connection given as `database_url` or `config`, check mode, and the photo_sync
    package importable (or the task fails saying which interpreter to use)."""
    module = AnsibleModule(argument_spec=spec, required_one_of=[("database_url", "config")],
                           supports_check_mode=True)
    require_photo_sync(module)
    return module


def require_photo_sync(module):
    """Fail the task, saying which interpreter to use, when photo_sync is not importable."""
    if not HAS_PHOTO_SYNC:
        module.fail_json(
            msg=missing_required_lib(
                "photo_sync", reason="run this module with the photo-sync venv's interpreter "
                "(ansible_python_interpreter: /opt/photo-sync/venv/bin/python)"),
            exception=PHOTO_SYNC_IMPORT_ERROR)


def settings_overrides(params, **extra_overrides):
    """The EdgeSettings overrides the module's options make (unset options override nothing)."""
    overrides = {}
    for option, key in OPTION_SETTINGS:
        value = params.get(option)
        if isinstance(value, bool):
            value = "true" if value else "false"  # the words EdgeSettings reads as booleans
        overrides[key] = value
    overrides.update(extra_overrides)
    return {key: value for key, value in overrides.items() if value is not None}


def name_options(text):
    """`text` with each setting it names led by the module option that sets it."""
    options = dict((key, option) for option, key in OPTION_SETTINGS)
    return SETTING_NAME.sub(lambda m: "%s (%s)" % (options[m.group(1)], m.group(0)), text)


def failure_message(doing, exc):
    """The task's `msg` for an engine failure, or None when `exc` is a bug to let through."""
    import psycopg

    from photo_sync import db
    from photo_sync.errors import PhotoSyncError

    if isinstance(exc, PhotoSyncError):
        # The engine names settings as the CLI knows them; a task sets them as options.
        return "%s: %s" % (doing, name_options(str(exc)))
    if isinstance(exc, psycopg.Error):
        return "%s: %s" % (doing, db.unavailable(exc, "database_url"))
    return None


def run_engine(module, doing, call, *args, **kwargs):
    """Run one photo_sync call; its failure fails the task as `<doing>: <what to do>`."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:
        msg = failure_message(doing, exc)
        if msg is None:
            raise
        module.fail_json(msg=msg)


def edge_settings(module, need_ho=True, **extra_overrides):
    """EdgeSettings from the `config` file, the environment and the module's options
    (options win). Fails the module with a message naming what is missing."""
    from photo_sync.edge.settings import EdgeSettings

    return run_engine(module, "invalid photo-sync settings", EdgeSettings.load,
                      module.params.get("config"),
                      overrides=settings_overrides(module.params, **extra_overrides),
                      need_ho=need_ho)
