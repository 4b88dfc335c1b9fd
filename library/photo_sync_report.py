#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: photo_sync_report
short_description: Deliver a store's pending photo sync statuses to head office
description:
  - Every photo outcome (synced, failed, deleted) is queued in the store database;
    this module delivers the queue to head office in batches. Head office being down
    loses nothing; the queue stays for the next delivery.
  - In check mode nothing is sent; C(pending) tells how many would be.
version_added: "0.1.0"
author: photo-sync developers
options:
  config:
    description: Path on the target of the agent's settings file (KEY=VALUE).
    type: path
  database_url:
    description: libpq URL of the store database.
    type: str
  ho_url:
    description: Base URL of the head-office sync API.
    type: str
  store_id:
    description: This store's UUID as registered at head office.
    type: str
  store_secret:
    description: This store's secret at head office.
    type: str
  timeout:
    description: HTTP timeout in seconds.
    type: float
  retries:
    description: Retries of a failing HTTP request.
    type: int
notes:
  - Supports check mode.
requirements:
  - the photo_sync package (the photo-sync venv)
"""

EXAMPLES = r"""
- name: Deliver pending sync statuses to head office
  photo_sync_report:
    config: /etc/photo-sync/edge.env
  vars:
    ansible_python_interpreter: /opt/photo-sync/venv/bin/python
"""

RETURN = r"""
reported:
  description: Status reports delivered.
  returned: always
  type: int
  sample: 120
pending:
  description: Status reports still queued (in check mode, the ones that would be sent).
  returned: always
  type: int
  sample: 0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.photo_sync_common import (DATABASE_ARGS, HO_ARGS, argument_spec,
                                                    edge_settings, require_photo_sync)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(DATABASE_ARGS, HO_ARGS),
        required_one_of=[("database_url", "config")],
        supports_check_mode=True,
    )
    require_photo_sync(module)
    import psycopg
    from photo_sync.edge.client import HOError, HOUnreachable
    from photo_sync.edge.reporter import deliver
    from photo_sync.edge.store import SchemaMissing

    settings = edge_settings(module, need_ho=not module.check_mode)
    try:
        result = deliver(settings, dry_run=module.check_mode)
    except SchemaMissing as exc:
        module.fail_json(msg=str(exc))
    except (HOUnreachable, HOError) as exc:
        module.fail_json(msg="status reports stay queued: %s" % exc)
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        module.fail_json(msg="cannot read the status queue from the store database: %s "
                             "(check database_url)" % first)
    module.exit_json(changed=result.changed, reported=result.reported, pending=result.pending)


if __name__ == "__main__":
    main()
