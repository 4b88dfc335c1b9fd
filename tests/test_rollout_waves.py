"""rollout.yml's wave gate and failure budget, run for real across nine stores.

Each store is its own inventory host on this machine (`ansible_connection: local`).
The rollout runs with `--skip-tags edge_photo_sync`: the waves, the gate, the judge and
the fleet summary run, and every store's inventory is validated against the
edge_photo_sync role's argument specification, but no phase of the role touches the
host. A store fails for a real reason the role detects: its inventory lacks
`edge_photo_sync_store_id`. A store that cannot be reached is an ssh host on a closed
loopback port. Everything is asserted from what an operator sees: the fleet summary,
which stores reached the role, the exit code.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STORES = [f"store{n:02d}" for n in range(1, 10)]
VALIDATE = "photosync.fleet.edge_photo_sync : Validating arguments against arg spec 'main'"
MISSING_ID = "missing required arguments: edge_photo_sync_store_id"


def closed_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fleet(tmp_path: Path, *, missing_id=(), unreachable=(), **knobs) -> Path:
    """Write a nine-store inventory; `knobs` become group vars of all (as operators set them)."""
    hosts = {}
    for n, name in enumerate(STORES, 1):
        host = {} if name in missing_id else {
            "edge_photo_sync_store_id": f"00000000-0000-4000-8000-{n:012d}"}
        if name in unreachable:
            host.update(ansible_connection="ssh", ansible_host="127.0.0.1",
                        ansible_port=closed_port(), ansible_user="photo-sync-test",
                        ansible_ssh_common_args="-o BatchMode=yes -o ConnectTimeout=5")
        hosts[name] = host
    inventory = {"all": {
        "vars": {"ansible_connection": "local",
                 "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                 "photo_sync_build_wheels": False,
                 "edge_photo_sync_ho_url": "http://127.0.0.1:9",
                 "edge_photo_sync_store_secret": "not-a-secret-only-a-test",
                 **knobs},
        "children": {"stores": {"hosts": hosts}}}}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


class Rollout:
    """One finished `ansible-playbook rollout.yml` and what its output says."""

    def __init__(self, proc: subprocess.CompletedProcess):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.output = proc.stdout + proc.stderr

    def __repr__(self) -> str:
        return f"Rollout(rc={self.rc}) output tail:\n{self.output[-4000:]}"

    @property
    def results(self) -> dict[str, str]:
        """store -> result column of the fleet summary table."""
        return dict(re.findall(r"^\s+(store\d\d)\s+(ok|failed|skipped|unreachable)\s",
                               self.stdout, re.M))

    @property
    def reasons(self) -> dict[str, str]:
        """store -> the reason line under the summary table ('<store>: <result>: <why>')."""
        return {m[0]: m[2] for m in re.findall(
            r"^\s+(store\d\d): (failed|skipped|unreachable): (.*)$", self.stdout, re.M)}

    @property
    def validated(self) -> list[str]:
        """The stores whose inventory reached the edge_photo_sync role (ok or fatal)."""
        hosts = []
        for section in self.stdout.split("\nTASK [")[1:]:
            if section.startswith(VALIDATE):
                hosts += re.findall(r"^(?:ok|fatal): \[(store\d\d)\]", section, re.M)
        return sorted(hosts)


def rollout(inventory: Path, *extra: str) -> Rollout:
    """Run rollout.yml from the repository root, bounded in time."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_RETRY_FILES_ENABLED": "0"}
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), "playbooks/rollout.yml",
         "--skip-tags", "edge_photo_sync", *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return Rollout(proc)


def assert_rows(run: Rollout, expected: dict[str, str]) -> None:
    assert run.results == expected, run


def test_a_wave_beyond_the_percentage_stops_the_rollout(tmp_path):
    inventory = fleet(tmp_path, missing_id=("store03", "store04"),
                      photo_sync_rollout_waves=[1, 4, 4],
                      photo_sync_rollout_max_fail_percentage=25,
                      photo_sync_rollout_failure_budget=9)
    run = rollout(inventory)

    assert run.rc != 0, run
    assert_rows(run, {"store01": "ok", "store02": "ok", "store03": "failed",
                      "store04": "failed", "store05": "ok", **dict.fromkeys(STORES[5:], "skipped")})
    # The third wave never reached the role.
    assert run.validated == STORES[:5], run
    assert MISSING_ID in run.reasons["store03"], run
    stopped = ("stopped after the wave of store02, store03, store04, store05: 2 of 4 failed "
               "(store03, store04), more than 25%")
    assert {run.reasons[s] for s in STORES[5:]} == {stopped}, run
    assert re.search(r"6 of 9 stores did not finish the\s+rollout:\s+store03, store04, store06,",
                     run.output), run


@pytest.mark.parametrize("budget", [2, "25%"])
def test_the_failure_budget_counts_across_waves(tmp_path, budget):
    # One failure in each of waves 2, 3 and 4 (1 of 2 stores: not more than 50%): two fit the
    # budget and the rollout goes on; the third spends it and the last wave is skipped.
    inventory = fleet(tmp_path, missing_id=("store02", "store04", "store06"),
                      photo_sync_rollout_waves=[1, 2, 2, 2, 2],
                      photo_sync_rollout_max_fail_percentage=50,
                      photo_sync_rollout_failure_budget=budget)
    run = rollout(inventory)

    assert run.rc != 0, run
    assert_rows(run, {"store01": "ok", "store02": "failed", "store03": "ok", "store04": "failed",
                      "store05": "ok", "store06": "failed", "store07": "ok",
                      "store08": "skipped", "store09": "skipped"})
    assert run.validated == STORES[:7], run
    stopped = ("stopped before the wave of store08, store09: 3 stores failed "
               "(store02, store04, store06), more than the failure budget of 2")
    assert run.reasons["store08"] == run.reasons["store09"] == stopped, run


def test_a_failure_within_both_limits_lets_the_rollout_finish(tmp_path):
    inventory = fleet(tmp_path, missing_id=("store05",))
    # The knobs from the command line this time, as an operator overrides the inventory.
    run = rollout(inventory, "-e", '{"photo_sync_rollout_waves": [1, 4, 4], '
                  '"photo_sync_rollout_max_fail_percentage": 25, '
                  '"photo_sync_rollout_failure_budget": 1}')

    assert run.rc != 0, run
    assert_rows(run, {**dict.fromkeys(STORES, "ok"), "store05": "failed"})
    assert run.validated == STORES, run
    assert set(run.reasons) == {"store05"} and MISSING_ID in run.reasons["store05"], run
    assert re.search(r"1 of 9 stores did not finish the\s+rollout:\s+store05 ", run.output), run


def test_all_good_every_store_ok_and_exit_0(tmp_path):
    run = rollout(fleet(tmp_path))  # the default waves: 1, 10%, 50%, 100%

    assert run.rc == 0, run
    assert_rows(run, dict.fromkeys(STORES, "ok"))
    assert run.validated == STORES, run
    assert run.reasons == {}, run
    assert re.search(r"total 9 stores\s+9 ok", run.stdout), run
    # The rehearsal changed nothing on any store.
    recap = re.findall(r"^(store\d\d)\s+: ok=\d+\s+changed=(\d+)", run.stdout, re.M)
    assert sorted(recap) == [(store, "0") for store in STORES], run
    # Four waves of 1, 1, 4 and 3 stores.
    assert run.stdout.count("PLAY [Roll the edge agent out to the stores in canary waves]") == 4, \
        run


def test_an_unreachable_store_counts_against_the_budget(tmp_path):
    inventory = fleet(tmp_path, missing_id=("store05",), unreachable=("store02",),
                      photo_sync_rollout_waves=[1, 2, 2, 2, 2],
                      photo_sync_rollout_max_fail_percentage=50,
                      photo_sync_rollout_failure_budget=1)
    run = rollout(inventory)

    assert run.rc != 0, run
    assert_rows(run, {"store01": "ok", "store02": "unreachable", "store03": "ok",
                      "store04": "ok", "store05": "failed",
                      **dict.fromkeys(STORES[5:], "skipped")})
    stopped = ("stopped before the wave of store06, store07: 2 stores failed "
               "(store02, store05), more than the failure budget of 1")
    assert {run.reasons[s] for s in STORES[5:]} == {stopped}, run
    assert run.validated == ["store01", "store03", "store04", "store05"], run


def test_an_unreachable_canary_stops_the_rollout_and_the_summary_still_prints(tmp_path):
    inventory = fleet(tmp_path, unreachable=("store01",), photo_sync_rollout_waves=[1, "100%"])
    run = rollout(inventory)

    assert run.rc != 0, run
    assert_rows(run, {"store01": "unreachable", **dict.fromkeys(STORES[1:], "skipped")})
    assert run.validated == [], run
    assert run.reasons["store02"] == ("stopped after the wave of store01: 1 of 1 failed "
                                      "(store01), more than 0%"), run
