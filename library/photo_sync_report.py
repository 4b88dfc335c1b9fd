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
  - In check mode nothing is sent; C(reported) tells how many reports a real run would
    deliver, and C(changed) is true when any are queued (a real run would deliver them).
version_added: "0.1.0"
author: photo-sync developers (@photo-sync)
extends_documentation_fragment:
  - photo_sync.database
  - photo_sync.ho
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Sends nothing; C(reported) says how many reports a real run would deliver.
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Deliver pending sync statuses to head office
  photosync.fleet.photo_sync_report:
    config: /etc/photo-sync/edge.env
  vars:
    ansible_python_interpreter: /opt/photo-sync/venv/bin/python
"""

RETURN = r"""
reported:
  description: Status reports delivered (in check mode, the ones a real run would deliver).
  returned: always
  type: int
  sample: 120
pending:
  description: Status reports still queued (in check mode, the queue as it is, all of which
    a real run would send).
  returned: always
  type: int
  sample: 0
"""


from ansible.module_utils.photo_sync_common import (
    DATABASE_ARGS, HO_ARGS, argument_spec, edge_settings, new_module, run_engine)


ARGUMENT_SPEC = argument_spec(DATABASE_ARGS, HO_ARGS)


def report_result(reported, pending, check_mode):
    """The module's result; a check run would deliver every queued report."""
    if check_mode:
        return dict(changed=pending > 0, reported=pending, pending=pending)
    return dict(changed=reported > 0, reported=reported, pending=pending)


def main():
    """Entry point: deliver (or, in check mode, count) the queued status reports."""
    module = new_module(ARGUMENT_SPEC)
    from photo_sync.edge.reporter import deliver

    settings = edge_settings(module, need_ho=not module.check_mode)
    result = run_engine(module, "delivering the status reports failed, they stay queued",
                        deliver, settings, dry_run=module.check_mode)
    module.exit_json(**report_result(result.reported, result.pending, module.check_mode))


if __name__ == "__main__":
    main()
