#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_bytea_schema
short_description: Ensure the store database can hold product photos as BYTEA
description:
  - Creates the C(product_photo) table, or adds the columns it lacks to an existing one
    (metadata synced by other head-office feeds is kept), with indexes on C(sync_status)
    and C(last_sync_at), C(STORAGE EXTERNAL) on the bytes, and the sync agent's own tables.
  - With I(state=absent), removes what it added. The photo bytes and the agent's
    tables are dropped only with I(drop_data=true).
  - With I(state=reset), does to the data what a rollback does (the same as
    C(photo-sync-edge reset)) - every photo's C(sync_status) goes back to C(pending) and
    its C(sync_error) is cleared; with I(clear_binary=true) the photo bytes held are
    cleared too. A table without the sync columns has nothing to reset (zero counts, not
    an error). It fails while a sync run holds the run lock (stop the timers first).
  - All statements run in one transaction. In check mode they run and are rolled back,
    so check mode proves the statements would work and reports exactly what would run
    (and, for I(state=reset), how many rows would change).
  - Runs with the photo-sync venv's interpreter (the C(photo_sync) package and psycopg 3).
version_added: "0.1.0"
author: photo-sync developers (@photo-sync)
extends_documentation_fragment:
  - photo_sync.database
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Computes the same DDL and runs none of it.
  diff_mode:
    support: full
    details: Shows the DDL the task runs (or, in check mode, would run).
  platform:
    platforms: posix
options:
  table:
    description: Name of the photo table (a plain lower-case SQL identifier).
    type: str
    default: product_photo
  state:
    description:
      - C(present) - the schema additions are there.
      - C(absent) - they are removed.
      - C(reset) - every photo is back to C(pending) (the schema stays).
    type: str
    choices: [present, absent, reset]
    default: present
  drop_data:
    description: With I(state=absent), also drop C(image_binary) and the agent's tables.
    type: bool
    default: false
  clear_binary:
    description: With I(state=reset), also clear the photo bytes (C(image_binary)) held.
    type: bool
    default: false
  grant_to:
    description: Database role the agent runs as; gets SELECT, INSERT, UPDATE, DELETE on the tables.
    type: str
  grant_select_to:
    description:
      - Database roles that only read the photo table (the store's photo server); each gets
        SELECT on I(table) and nothing else. With I(state=present).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Migrate the store database for photo sync
  photosync.fleet.pg_bytea_schema:
    database_url: postgresql:///edge?host=/var/run/postgresql
    grant_to: photo_sync
  become: true
  become_user: postgres
  vars:
    ansible_python_interpreter: /opt/photo-sync/venv/bin/python

- name: Reset every photo to pending and clear the bytes (rollback)
  photosync.fleet.pg_bytea_schema:
    config: /etc/photo-sync/edge.env
    state: reset
    clear_binary: true
  register: reset

- name: Remove the sync columns but keep the photo bytes
  photosync.fleet.pg_bytea_schema:
    config: /etc/photo-sync/edge.env
    state: absent
"""

RETURN = r"""
queries:
  description:
    - The SQL statements that ran (or, in check mode, would run) and changed something.
    - Empty when the schema is current, or when I(state=reset) finds nothing to reset.
  returned: always
  type: list
  elements: str
  sample: ["ALTER TABLE product_photo ADD COLUMN image_binary bytea"]
reset:
  description: Photos whose C(sync_status) went (in check mode, would go) back to C(pending).
  returned: when I(state=reset)
  type: int
  sample: 1200
cleared:
  description: Photos whose bytes were (in check mode, would be) cleared.
  returned: when I(state=reset)
  type: int
  sample: 0
"""


from ansible.module_utils.photo_sync_common import (
    DATABASE_ARGS, argument_spec, edge_settings, new_module, run_engine)


def reset_result(counts, queries):
    """The module's result for a reset, from the engine's counts and statements."""
    return dict(changed=bool(counts["reset"] or counts["cleared"]),
                reset=counts["reset"], cleared=counts["cleared"],
                queries=[queries[step] for step in ("reset", "cleared") if counts[step]])


def reset(database_url, table, clear_binary, dry_run):
    """Run EdgeStore.reset on one table; returns the module's result."""
    from photo_sync.edge.store import EdgeStore

    store = EdgeStore(database_url, table)
    try:
        counts = store.reset(clear_bytes=clear_binary, dry_run=dry_run)
        return reset_result(counts, store.reset_queries())
    finally:
        store.close()


ARGUMENT_SPEC = argument_spec(
    DATABASE_ARGS,
    table=dict(type="str", default="product_photo"),
    state=dict(type="str", default="present", choices=["present", "absent", "reset"]),
    drop_data=dict(type="bool", default=False),
    clear_binary=dict(type="bool", default=False),
    grant_to=dict(type="str"),
    grant_select_to=dict(type="list", elements="str", default=[]),
)


def main():
    """Entry point: ensure, remove or reset the photo schema of one store database."""
    module = new_module(ARGUMENT_SPEC)
    from photo_sync.edge import schema

    settings = edge_settings(module, need_ho=False)
    p = module.params
    if p["state"] == "reset":
        result = run_engine(module, "resetting the sync status of table %s" % p["table"],
                            reset, settings.database_url, p["table"], p["clear_binary"],
                            dry_run=module.check_mode)
        module.exit_json(**result)
    queries = run_engine(module, "migrating table %s failed, nothing was changed" % p["table"],
                         schema.ensure, settings.database_url, p["table"], p["state"],
                         p["drop_data"], p["grant_to"], p["grant_select_to"],
                         check_only=module.check_mode)
    result = dict(changed=bool(queries), queries=queries)
    if module._diff:
        result["diff"] = dict(before="", after="".join(q.rstrip() + ";\n" for q in queries),
                              before_header="%s (current)" % p["table"],
                              after_header="%s (statements to run)" % p["table"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
