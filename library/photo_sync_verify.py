#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: photo_sync_verify
short_description: Compare the store database with head office, and mark the drift for repair
description:
  - Runs C(photo-sync-edge verify) on the target - head office's listing (metadata only)
    against the store's table, with the stored bytes hashed inside PostgreSQL - so no photo
    byte crosses the WAN. Names every photo that is C(missing) (head office lists it, the
    store holds no bytes), C(extra) (the store holds it, head office does not list it),
    C(stale) (another version or checksum than head office lists) or C(corrupt) (the stored
    bytes do not hash to the stored checksum).
  - In check mode it only compares. A real run also repairs (C(--repair)) - it marks the
    missing, stale and corrupt photos so that the next sync run of any mode downloads them
    again. It deletes nothing and touches no bytes; extras are left to a full sync, under
    its delete guard.
  - Drift is a result, not a failure - C(matches) says whether the store holds exactly what
    head office lists, C(counts) and the id lists say what differs, and C(changed) is true
    when the run marked (or, in check mode, would mark) photos for repair. Set
    I(fail_on_drift) to fail the task on drift. The task fails for real errors only - head
    office unreachable, the database unusable, a sync run holding the run lock (repair).
  - A separate module rather than a mode of C(photo_sync_pull) - a verify has none of a
    pull's options (mode, delete guard, bandwidth), downloads nothing, and its check mode is
    the comparison itself, not the dry run of a sync.
version_added: "0.2.0"
author: photo-sync developers (@photo-sync)
extends_documentation_fragment:
  - photo_sync.database
  - photo_sync.ho
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Compares only; C(changed) says whether a real run would mark photos for repair.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  repair:
    description:
      - Mark the drift for the next sync run (C(photo-sync-edge verify --repair)). Check mode
        never repairs.
    type: bool
    default: true
  fail_on_drift:
    description: Fail the task when the store does not match head office (after repairing).
    type: bool
    default: false
notes:
  - Supports check mode - compares only; C(changed) then says whether a real run would mark
    photos for repair.
"""

EXAMPLES = r"""
- name: Compare the store with HO, changing nothing
  photosync.fleet.photo_sync_verify:
    config: /etc/photo-sync/edge.env
  check_mode: true
  vars:
    ansible_python_interpreter: /opt/photo-sync/venv/bin/python

- name: Compare and mark the drift for the next sync
  photosync.fleet.photo_sync_verify:
    config: /etc/photo-sync/edge.env
  register: verify

- name: Download what was marked
  photosync.fleet.photo_sync_pull:
    config: /etc/photo-sync/edge.env
  when: verify.counts.missing + verify.counts.stale + verify.counts.corrupt > 0
"""

RETURN = r"""
matches:
  description: True when the store holds exactly head office's live photos, with the right bytes.
  returned: always
  type: bool
listed:
  description: Live photos head office lists.
  returned: always
  type: int
held:
  description: Rows in the store's table.
  returned: always
  type: int
counts:
  description: Photos per kind of drift.
  returned: always
  type: dict
  sample: {missing: 1, extra: 0, stale: 0, corrupt: 1}
ids:
  description: The ids per kind of drift (sorted).
  returned: always
  type: dict
  sample: {missing: ["0b0e..."], extra: [], stale: [], corrupt: ["7f1a..."]}
repaired:
  description:
    - Photos marked for the next sync run; C(null) in check mode or with I(repair=false).
  returned: always
  type: int
duration:
  description: Seconds the verify took.
  returned: always
  type: float
"""

from ansible.module_utils.photo_sync_common import (
    DATABASE_ARGS, HO_ARGS, argument_spec, edge_settings, new_module, run_engine)

KINDS = ("missing", "extra", "stale", "corrupt")
# What a repair marks; extras wait for a full pull's guarded delete.
REPAIRED_KINDS = ("missing", "stale", "corrupt")


def verify_result(data, check_mode, repair):
    """The module's result from the engine's `verify --json` shape (VerifyResult.as_dict).

    `changed` is what the repair did (in check mode, what it would do): photos marked for
    the next pull. Extras alone change nothing, since a repair leaves them; a real run
    with `repair: false` changes nothing."""
    counts = {kind: int(data["counts"][kind]) for kind in KINDS}
    repaired = data.get("repaired")
    if check_mode:
        changed = repair and sum(counts[kind] for kind in REPAIRED_KINDS) > 0
    else:
        changed = bool(repaired)
    return dict(
        changed=changed,
        matches=bool(data["matches"]),
        listed=data["listed"],
        held=data["held"],
        counts=counts,
        ids={kind: list(data[kind]) for kind in KINDS},
        repaired=repaired,
        duration=data["duration"],
    )


def drift_message(result):
    """The task's `msg` when I(fail_on_drift) fails it: what differs and what to run."""
    counts = ", ".join("%d %s" % (result["counts"][k], k) for k in KINDS if result["counts"][k])
    then = ("the marked photos are downloaded by the next sync run" if result["repaired"]
            else "a run with repair (not in check mode) marks them for the next sync run")
    return "the store differs from HO (%s): %s; extras go with a full sync" % (counts, then)


ARGUMENT_SPEC = argument_spec(
    DATABASE_ARGS, HO_ARGS,
    repair=dict(type="bool", default=True),
    fail_on_drift=dict(type="bool", default=False),
)


def main():
    """Entry point: one verify of the store against HO, repairing unless in check mode."""
    module = new_module(ARGUMENT_SPEC)
    from photo_sync.edge.verify import verify

    p = module.params
    settings = edge_settings(module)
    found = run_engine(module, "verify of the store against HO stopped", verify, settings,
                       repair=p["repair"] and not module.check_mode)
    result = verify_result(found.as_dict(), module.check_mode, p["repair"])
    if p["fail_on_drift"] and not result["matches"]:
        module.fail_json(msg=drift_message(result), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
