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
  - In check mode the run goes down the same path as a real one and its writes are rolled
    back; nothing is written and no bytes are kept. The result's C(summary) carries the
    counts the real run would produce, C(changed) says whether it would change anything,
    and C(plan) lists the ids it would download, update and delete. A check run fails
    where the real run would (for example the delete guard).
  - Only one run at a time per database; the task fails when another run holds the lock.
version_added: "0.1.0"
author: photo-sync developers (@photo-sync)
extends_documentation_fragment:
  - photo_sync.database
  - photo_sync.ho
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Runs the sync and rolls its writes back; C(summary) and C(plan) say what a
      real run would do.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  mode:
    description: Which kind of run.
    type: str
    choices: [full, incremental]
    default: incremental
  concurrency:
    description: Parallel downloads.
    type: int
  bandwidth_limit:
    description:
      - Download cap, as the agent's C(PHOTO_SYNC_EDGE_BANDWIDTH_LIMIT) takes it.
      - A plain rate - a bare number is bytes per second (an integer given in YAML means
        bytes per second, as before), C(512k) and C(2M) are binary units, C(0) or C(off)
        means none.
      - Or a timetable by the store's local time of day in rclone's C(--bwlimit) form,
        for example C(08:00,512k 20:00,off) - each rate holds from its time to the next
        entry's, the last runs on past midnight; rates in a timetable need their unit.
      - A value the agent would not accept fails the task, naming the entry at fault.
    type: str
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
notes:
  - Supports check mode. C(changed) is the engine's - true only when a photo was (or, in
    check mode, would be) written or deleted.
"""

EXAMPLES = r"""
- name: Run the first full sync
  photosync.fleet.photo_sync_pull:
    config: /etc/photo-sync/edge.env
    mode: full
  vars:
    ansible_python_interpreter: /opt/photo-sync/venv/bin/python

- name: Catch up, capped at 2 MB/s, tolerating a few failed photos
  photosync.fleet.photo_sync_pull:
    config: /etc/photo-sync/edge.env
    bandwidth_limit: 2000000
    max_failures: 5

- name: Catch up at 512 KiB/s in opening hours, uncapped from 20:00 (store's local time)
  photo_sync_pull:
    config: /etc/photo-sync/edge.env
    bandwidth_limit: "08:00,512k 20:00,off"
"""

RETURN = r"""
summary:
  description:
    - Counts of the run; in check mode, the counts the real run would produce
      (C(downloaded) - photos it would download, C(bytes) - their size, C(deleted), ...).
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
  description: In check mode, the ids of the photos a real run would download, update
    and delete (the engine's C(ids)).
  returned: check mode
  type: dict
  sample: {download: ["0b0e..."], update: [], delete: []}
reported:
  description: Status reports delivered to head office at the end of the run.
  returned: always
  type: int
report_pending:
  description: Status reports still queued after the run (delivered by a later run).
  returned: always
  type: int
"""

from ansible.module_utils.photo_sync_common import (
    DATABASE_ARGS, HO_ARGS, argument_spec, edge_settings, new_module, run_engine)

COUNTS = ("listed", "downloaded", "unchanged", "updated", "deleted", "failed", "bytes",
          "duration", "status")


def sync_kwargs(check_mode, force_delete, report):
    """run_sync's keyword arguments: a check run is the engine's dry run, listing ids."""
    return dict(dry_run=check_mode, force_delete=force_delete, report=report,
                list_ids=check_mode)


def pull_result(summary, check_mode):
    """The module's result from the engine's RunSummary; `changed` is the engine's own."""
    data = summary.as_dict()
    result = dict(
        changed=summary.changed,
        summary={k: data[k] for k in COUNTS if k in data},
        failures=summary.failures,
        reported=summary.reported,
        report_pending=summary.report_pending,
    )
    if check_mode:
        # Roles read `plan`: the ids the engine's dry run would download, update, delete.
        result["plan"] = summary.ids
    return result


ARGUMENT_SPEC = argument_spec(
    DATABASE_ARGS, HO_ARGS,
    mode=dict(type="str", default="incremental", choices=["full", "incremental"]),
    concurrency=dict(type="int"),
    bandwidth_limit=dict(type="str"),
    max_failures=dict(type="int", default=0),
    max_delete_fraction=dict(type="float"),
    force_delete=dict(type="bool", default=False),
    report=dict(type="bool", default=True),
)


def main():
    """Entry point: one sync run (or, in check mode, the dry run of one)."""
    module = new_module(ARGUMENT_SPEC)
    from photo_sync.edge.engine import run_sync

    p = module.params
    if p["bandwidth_limit"] is not None:
        # The agent's own parser, so the task names the option and the entry at fault.
        from photo_sync.edge import bandwidth
        run_engine(module, "invalid photo-sync settings", bandwidth.parse,
                   p["bandwidth_limit"], setting="bandwidth_limit")
    settings = edge_settings(module)
    summary = run_engine(module, "photo sync (%s) stopped" % p["mode"], run_sync, settings,
                         p["mode"], **sync_kwargs(module.check_mode,
                                                  p["force_delete"], p["report"]))
    result = pull_result(summary, module.check_mode)
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
