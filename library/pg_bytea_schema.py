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
  - All statements run in one transaction. In check mode they run and are rolled back,
    so check mode proves the DDL would work and reports exactly what would run.
  - Runs with the photo-sync venv's interpreter (the C(photo_sync) package and psycopg 3).
version_added: "0.1.0"
author: photo-sync developers
options:
  database_url:
    description:
      - libpq URL of the store database, e.g. C(postgresql:///edge?host=/var/run/postgresql).
      - Taken from I(config) (C(PHOTO_SYNC_EDGE_DATABASE_URL)) when not given.
    type: str
  config:
    description: Path on the target of the agent's settings file (KEY=VALUE).
    type: path
  table:
    description: Name of the photo table.
    type: str
    default: product_photo
  state:
    description: Whether the schema additions should be there.
    type: str
    choices: [present, absent]
    default: present
  drop_data:
    description: With I(state=absent), also drop C(image_binary) and the agent's tables.
    type: bool
    default: false
  grant_to:
    description: Database role the agent runs as; gets SELECT, INSERT, UPDATE, DELETE on the tables.
    type: str
notes:
  - Supports check mode and diff mode.
requirements:
  - the photo_sync package (the photo-sync venv)
"""

EXAMPLES = r"""
- name: Migrate the store database for photo sync
  pg_bytea_schema:
    database_url: postgresql:///edge?host=/var/run/postgresql
    grant_to: photo_sync
  become: true
  become_user: postgres
  vars:
    ansible_python_interpreter: /opt/photo-sync/venv/bin/python

- name: Remove the sync columns but keep the photo bytes
  pg_bytea_schema:
    config: /etc/photo-sync/edge.env
    state: absent
"""

RETURN = r"""
queries:
  description: The SQL statements that ran (or, in check mode, would run).
  returned: always
  type: list
  elements: str
  sample: ["ALTER TABLE product_photo ADD COLUMN image_binary bytea"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.photo_sync_common import (DATABASE_ARGS, argument_spec,
                                                    edge_settings, require_photo_sync)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            DATABASE_ARGS,
            table=dict(type="str", default="product_photo"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            drop_data=dict(type="bool", default=False),
            grant_to=dict(type="str"),
        ),
        required_one_of=[("database_url", "config")],
        supports_check_mode=True,
    )
    require_photo_sync(module)
    import psycopg
    from photo_sync.edge import schema

    settings = edge_settings(module, need_ho=False)
    p = module.params
    try:
        queries = schema.ensure(settings.database_url, p["table"], p["state"], p["drop_data"],
                                p["grant_to"], check_only=module.check_mode)
    except schema.SchemaError as exc:
        module.fail_json(msg="cannot plan the photo schema: %s" % exc)
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        module.fail_json(msg="cannot connect to the store database (%s): check database_url "
                             "and that PostgreSQL is running" % first)
    except psycopg.Error as exc:
        module.fail_json(msg="migrating table %s failed, nothing was changed: %s"
                             % (p["table"], str(exc).strip()))
    result = dict(changed=bool(queries), queries=queries)
    if module._diff:
        result["diff"] = dict(before="", after="".join(q.rstrip() + ";\n" for q in queries),
                              before_header="%s (current)" % p["table"],
                              after_header="%s (statements to run)" % p["table"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
