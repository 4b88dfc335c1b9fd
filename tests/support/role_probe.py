"""Run a few tasks inside a real role's context on localhost, without running the role.

A probe is a task file added to a role for one test run. The role itself is the
repository's: a scratch roles folder holds, per role, links to its defaults, vars,
templates, meta and handlers and to each of its task files, plus the probe's file.
`include_role: tasks_from: <probe>` then loads the role's defaults and vars, sets
`role_path` and the template search path as a play would, and the probe can render
the role's templates or evaluate its expressions. The output comes from the json
callback, one result per task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def scratch_roles(tmp_path: Path, probes: dict[tuple[str, str], list[dict]]) -> Path:
    """A roles folder mirroring roles/ by links, with each probe task file added.

    `probes` maps (role, file name) to the probe's tasks.
    """
    roles = tmp_path / "roles"
    for role in sorted((ROOT / "roles").iterdir()):
        mirror = roles / role.name
        (mirror / "tasks").mkdir(parents=True)
        for part in role.iterdir():
            if part.name != "tasks":
                (mirror / part.name).symlink_to(part)
        for task_file in sorted((role / "tasks").glob("*")):
            (mirror / "tasks" / task_file.name).symlink_to(task_file)
    for (role, name), tasks in probes.items():
        (roles / role / "tasks" / name).write_text(yaml.safe_dump(tasks, sort_keys=False))
    return roles


def run_probes(tmp_path: Path, probes: dict[tuple[str, str], list[dict]],
               extra_vars: dict | None = None, args: tuple[str, ...] = ()) -> dict:
    """Include every probe (in order) in one play on localhost; the json callback's output.

    `extra_vars` go on the command line as -e key=value strings, as an operator types
    them; `args` are more ansible-playbook arguments (e.g. a JSON -e).
    """
    roles = scratch_roles(tmp_path, probes)
    play = [{"name": "Probe the roles", "hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": f"Probe {role} {name}",
                        "ansible.builtin.include_role": {"name": role, "tasks_from": name}}
                       for role, name in probes]}]
    playbook = tmp_path / "probe.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    command = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
               "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)]
    for key, value in (extra_vars or {}).items():
        command += ["-e", f"{key}={value}"]
    command += list(args)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_ROLES_PATH=str(roles), ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"ansible-playbook gave no json (rc {proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from exc


def task_results(output: dict) -> dict[str, dict]:
    """Task name (without the `role : ` prefix) -> localhost's result, for every task."""
    return {task["task"]["name"].split(" : ", 1)[-1]: task["hosts"].get("localhost", {})
            for play in output["plays"] for task in play["tasks"]}
