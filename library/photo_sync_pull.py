#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: photo_sync_pull
short_description: Run one photo sync from head office into the store database
description:
  - Runs one sync run of the photo-sync edge agent on the target, the same engine the
    systemd timers run. C(full) walks the whole catalog and removes photos head office no
    longer has; C(incremental) continues from the stored cursor.
  - Every photo is verified against MD5 and SHA-256 before it is written; a photo that
    fails keeps its previous bytes and is marked C(failed).
  - In check mode nothing is downloaded or written; the result's C(plan) lists what
    would be downloaded, updated and deleted.
  - Only one run at a time per database; the task fails when another run holds the lock.
version_added: "0.1.0"
author: photo-sync developers
options:
  config:
    description:
      - Path on the target of the agent's settings file (KEY=VALUE, C(PHOTO_SYNC_EDGE_*)).
      - Options given to the module override it.
    type: path
  database_url:
    description: libpq URL of the store database.
    type: str
  ho_url:
    description: Base URL of the head-office sync API, e.g. C(https://ho.example:8443).
    type: str
  store_id:
    description: This store's UUID as registered at head office.
    type: str
  store_secret:
    description: This store's secret at head office.
    type: str
  mode:
    description: Which kind of run.
    type: str
    choices: [full, incremental]
    default: incremental
  concurrency:
    description: Parallel downloads.
    type: int
  bandwidth_limit:
    description: Download cap in bytes per second; C(0) means none.
    type: int
  max_failures:
    description: The task fails when more photos than this failed.
    type: int
    default: 0
  max_delete_fraction:
    description: A full run refuses to delete a larger fraction of the store's photos.
    type: float
  force_delete:
    description: Delete even above I(max_delete_fraction).
    type: bool
    default: false
  report:
    description: Deliver the queued status reports to head office at the end.
    type: bool
    default: true
  timeout:
    description: HTTP timeout in seconds.
    type: float
  retries:
    description: Retries of a failing HTTP request before the run gives up.
    type: int
notes:
  - Supports check mode. C(changed) is true only when a photo was written or deleted.
requirements:
  - the photo_sync package (the photo-sync venv)
"""

EXAMPLES = r"""
- name: Run the first full sync
  photo_sync_pull:
    config: /etc/photo-sync/edge.env
    mode: full
  vars:
    ansible_python_interpreter: /opt/photo-sync/venv/bin/python

- name: Catch up, capped at 2 MB/s, tolerating a few failed photos
  photo_sync_pull:
    config: /etc/photo-sync/edge.env
    bandwidth_limit: 2000000
    max_failures: 5
"""

RETURN = r"""
summary:
  description: Counts of the run.
  returned: always
  type: dict
  sample: {listed: 1000, downloaded: 12, unchanged: 985, updated: 1, deleted: 2, failed: 0,
           bytes: 2411724, duration: 3.2, status: ok}
failures:
  description: Photos that failed, with the reason (at most 50).
  returned: always
  type: list
  elements: dict
  sample: [{photo_id: 0b0e..., error: "checksum verification failed: MD5 mismatch"}]
plan:
  description: In check mode, what a real run would do.
  returned: check mode
  type: dict
  sample: {download: ["0b0e..."], update: [], delete: [], bytes: 204800}
reported:
  description: Status reports delivered to head office at the end of the run.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.photo_sync_common import (DATABASE_ARGS, HO_ARGS, argument_spec,
                                                    edge_settings, require_photo_sync)

COUNTS = ("listed", "downloaded", "unchanged", "updated", "deleted", "failed", "bytes",
          "duration", "status")


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            DATABASE_ARGS, HO_ARGS,
            mode=dict(type="str", default="incremental", choices=["full", "incremental"]),
            concurrency=dict(type="int"),
            bandwidth_limit=dict(type="int"),
            max_failures=dict(type="int", default=0),
            max_delete_fraction=dict(type="float"),
            force_delete=dict(type="bool", default=False),
            report=dict(type="bool", default=True),
        ),
        required_one_of=[("database_url", "config")],
        supports_check_mode=True,
    )
    require_photo_sync(module)
    import psycopg
    from photo_sync.edge.client import HOError, HOUnreachable
    from photo_sync.edge.engine import run_sync
    from photo_sync.edge.store import LockHeld, SchemaMissing

    p = module.params
    settings = edge_settings(module, CONCURRENCY=p["concurrency"],
                             BANDWIDTH_LIMIT=p["bandwidth_limit"],
                             MAX_DELETE_FRACTION=p["max_delete_fraction"])
    try:
        summary = run_sync(settings, p["mode"], dry_run=module.check_mode,
                           force_delete=p["force_delete"], report=p["report"])
    except LockHeld as exc:
        module.fail_json(msg="photo sync not started: %s" % exc)
    except SchemaMissing as exc:
        module.fail_json(msg=str(exc))
    except (HOUnreachable, HOError) as exc:
        module.fail_json(msg="photo sync (%s) stopped: %s" % (p["mode"], exc))
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        module.fail_json(msg="photo sync (%s) stopped on the store database: %s (check "
                             "database_url and that PostgreSQL is running)" % (p["mode"], first))

    data = summary.as_dict()
    result = dict(
        changed=summary.changed,
        summary={k: data[k] for k in COUNTS},
        failures=summary.failures,
        reported=summary.reported,
        report_pending=summary.report_pending,
    )
    if module.check_mode:
        result["plan"] = summary.plan
        result["changed"] = bool(summary.plan and (summary.plan["download"] or summary.plan[
            "update"] or summary.plan["delete"]))
    if summary.status == "refused":
        module.fail_json(msg=summary.error, **result)
    if summary.failed > p["max_failures"]:
        module.fail_json(msg="%d photos failed (max_failures is %d); first: %s"
                             % (summary.failed, p["max_failures"],
                                summary.failures[0]["error"] if summary.failures else "?"),
                         **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
