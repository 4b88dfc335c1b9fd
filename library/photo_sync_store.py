#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: photo_sync_store
short_description: Make head office's registered stores what the inventory says
description:
  - Registers stores in the head-office catalog with their name and secret, and enables or
    disables them, for a whole list in one transaction. A list that fails half-way changes
    nothing; an error names the entry and the store, never a secret.
  - A store given C(state=registered) (the default) that an operator disabled stays
    disabled; only C(state=enabled) enables it. Disabling revokes the store's tokens at
    once; a new secret revokes its old tokens.
  - Runs on a head-office API host with the HO venv's interpreter, which has the
    C(photo_sync) package. Nothing it returns or logs holds a secret.
version_added: "0.3.0"
author: photo-sync developers (@photo-sync)
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: The same transaction, rolled back; the result and the diff say what a real run
      would change.
  diff_mode:
    support: full
    details: Per store it changes, its name and enabled state before and after; a new secret
      shows as C(secret=changed), never its value.
  platform:
    platforms: posix
options:
  config:
    description:
      - Path on the target of head office's settings file (KEY=VALUE, C(PHOTO_SYNC_HO_*)),
        for C(PHOTO_SYNC_HO_DATABASE_URL).
    type: path
  database_url:
    description:
      - libpq URL of the head-office catalog; wins over I(config).
    type: str
  stores:
    description: The stores to make so. Stores not listed are left alone.
    type: list
    elements: dict
    required: true
    suboptions:
      store_id:
        description: The store's UUID.
        type: str
        required: true
      name:
        description: The store's name in the catalog.
        type: str
        default: ""
      secret:
        description: The store's secret (at least 16 characters; keep it in a vault).
        type: str
        required: true
      state:
        description:
          - C(registered) exists with this name and secret, leaving it enabled or disabled
            as it is; C(enabled) and C(disabled) also set that.
        type: str
        default: registered
        choices: [registered, enabled, disabled]
requirements:
  - the photo_sync package (the HO venv)
"""

EXAMPLES = r"""
- name: Register the fleet's stores
  photosync.fleet.photo_sync_store:
    config: /etc/photo-sync/ho.env
    stores: "{{ ho_sync_api_stores }}"
  no_log: true
  vars:
    ansible_python_interpreter: /opt/photo-sync-ho/venv/bin/python

- name: Disable a store that was closed
  photosync.fleet.photo_sync_store:
    config: /etc/photo-sync/ho.env
    stores:
      - store_id: 6f1c2a9e-2b4f-4d7a-9a53-8c1d0e4b7f21
        name: Store 12
        secret: "{{ vault_store_secrets['6f1c2a9e-2b4f-4d7a-9a53-8c1d0e4b7f21'] }}"
        state: disabled
"""

RETURN = r"""
created:
  description: Ids of the stores registered now (or, in check mode, that would be).
  returned: always
  type: list
  elements: str
updated:
  description: Ids of the stores whose name or secret changed.
  returned: always
  type: list
  elements: str
enabled:
  description: Ids of the stores enabled now.
  returned: always
  type: list
  elements: str
disabled:
  description: Ids of the stores disabled now.
  returned: always
  type: list
  elements: str
inactive:
  description: Ids of the listed stores that are disabled after the task.
  returned: always
  type: list
  elements: str
unchanged:
  description: How many listed stores were already as listed.
  returned: always
  type: int
  sample: 498
"""


from ansible.module_utils.photo_sync_common import new_module, run_engine

ARGUMENT_SPEC = dict(
    config=dict(type="path"),
    database_url=dict(type="str", no_log=True),
    stores=dict(type="list", elements="dict", required=True, options=dict(
        store_id=dict(type="str", required=True),
        name=dict(type="str", default=""),
        secret=dict(type="str", required=True, no_log=True),
        state=dict(type="str", default="registered",
                   choices=["registered", "enabled", "disabled"]),
    )),
)


def _diff_text(stores):
    """One line per store, sorted: what a diff shows (never a secret)."""
    lines = []
    for store_id in sorted(stores):
        view = stores[store_id]
        if view is None:
            continue
        lines.append("%s name=%s enabled=%s%s\n" % (
            store_id, view["name"], str(view["enabled"]).lower(),
            " secret=changed" if view.get("secret") else ""))
    return "".join(lines)


def store_result(outcome, diff):
    """The module's result from photo_sync.ho.stores.apply's outcome."""
    keys = ("changed", "created", "updated", "enabled", "disabled", "inactive", "unchanged")
    result = dict((key, outcome[key]) for key in keys)
    if diff:
        result["diff"] = dict(before=_diff_text(outcome["before"]),
                              after=_diff_text(outcome["after"]),
                              before_header="catalog stores", after_header="catalog stores")
    return result


def apply_stores(params, check_mode):
    """Load HO's settings, connect, and apply the list (rolled back in check mode)."""
    from photo_sync.ho import catalog, stores
    from photo_sync.ho.settings import HOSettings

    overrides = {"DATABASE_URL": params["database_url"]} if params["database_url"] else None
    settings = HOSettings.load(params["config"], need_jwt=False, need_s3=False,
                               overrides=overrides)
    entries = stores.parse_entries(params["stores"], where="stores")
    with catalog.connect(settings.database_url, setting="database_url", autocommit=True,
                         statement_timeout_ms=settings.statement_timeout_ms,
                         lock_timeout_ms=settings.lock_timeout_ms) as conn:
        return stores.apply(conn, entries, dry_run=check_mode)


def main():
    """Entry point: make the listed stores so (or, in check mode, say what would change)."""
    module = new_module(ARGUMENT_SPEC)
    outcome = run_engine(module, "registering the stores at head office failed", apply_stores,
                         module.params, module.check_mode)
    module.exit_json(**store_result(outcome, module._diff))


if __name__ == "__main__":
    main()
