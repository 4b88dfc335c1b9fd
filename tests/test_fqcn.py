"""The tree is the photosync.fleet collection, and it reads like one.

- Roles, playbooks, molecule scenarios and the docs' YAML examples name photo-sync's
  own modules and roles by FQCN (`photosync.fleet.photo_sync_pull`), as a user of the
  installed collection writes them; `collections/` makes those names resolve to this
  tree, so the demo and molecule run the FQCN path.
- A play whose tasks use `run_once` (a confirmation, a wave gate, a wheelhouse built
  once) pins `strategy: linear`: under `free` Ansible runs a `run_once` task on every
  host, so an operator's ANSIBLE_STRATEGY=free would ask the rollback's question once
  per store or build one wheelhouse per store at the same time.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COLLECTION = ROOT / "collections/ansible_collections/photosync/fleet"
MODULES = {path.stem for path in (ROOT / "library").glob("*.py")}
ROLES = {path.name for path in (ROOT / "roles").iterdir() if path.is_dir()}
ROLE_KEYS = {"include_role", "import_role", "ansible.builtin.include_role",
             "ansible.builtin.import_role"}
# Plays whose strategy the operator chooses (linear by default) and whose run_once tasks
# are harmless when repeated per host: an assert of the mode and a set_fact of the play's
# hosts on localhost (the same value from every host).
STRATEGY_CHOSEN = {("resync.yml", "Resync the stores"),
                   ("verify.yml", "Verify every store against HO")}


def yaml_sources():
    """(label, parsed YAML) for every YAML file and every docs YAML example."""
    for part in ("roles", "playbooks", "molecule", "inventories"):
        for path in sorted((ROOT / part).rglob("*.yml")):
            if "templates" in path.parts:
                continue
            yield str(path.relative_to(ROOT)), list(yaml.safe_load_all(path.read_text()))
    markdown = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
                *sorted((ROOT / "roles").glob("*/README.md"))]
    for path in markdown:
        for n, block in enumerate(re.findall(r"```ya?ml\n(.*?)```", path.read_text(), re.S)):
            try:
                yield f"{path.relative_to(ROOT)} example {n + 1}", list(yaml.safe_load_all(block))
            except yaml.YAMLError:
                continue  # a fragment, not a document


def short_names(node, found):
    """Every unqualified reference to photo-sync's own modules and roles under `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in MODULES or key in {f"ansible.legacy.{m}" for m in MODULES}:
                found.append(f"module {key}")
            if key == "role" and isinstance(value, str) and value in ROLES:
                found.append(f"role {value}")
            if key in ROLE_KEYS and isinstance(value, dict) and value.get("name") in ROLES:
                found.append(f"role {value['name']}")
            if key == "roles" and isinstance(value, list):
                found += [f"role {item}" for item in value
                          if isinstance(item, str) and item in ROLES]
            short_names(value, found)
    elif isinstance(node, list):
        for item in node:
            short_names(item, found)
    return found


def test_photo_sync_modules_and_roles_are_named_by_fqcn_everywhere():
    offenders = {label: found for label, docs in yaml_sources()
                 if (found := short_names(docs, []))}
    assert offenders == {}, "name them photosync.fleet.<name>"


def test_the_fqcn_check_sees_a_short_name():
    # The check above is only worth something if it finds what it looks for.
    play = [{"hosts": "stores", "roles": ["edge_photo_sync"],
             "tasks": [{"photo_sync_pull": {"mode": "full"}},
                       {"ansible.builtin.include_role": {"name": "photo_sync_common"}}]}]
    assert short_names(play, []) == ["role edge_photo_sync", "module photo_sync_pull",
                                     "role photo_sync_common"]


def test_collections_path_resolves_photosync_fleet_to_this_tree():
    assert "collections_path = collections" in (ROOT / "ansible.cfg").read_text()
    links = {"plugins/modules": ROOT / "library", "plugins/module_utils": ROOT / "module_utils",
             "plugins/doc_fragments": ROOT / "plugins/doc_fragments",
             "roles": ROOT / "roles", "playbooks": ROOT / "playbooks"}
    for part, target in links.items():
        assert (COLLECTION / part).resolve() == target.resolve(), part
    assert (COLLECTION / "meta/runtime.yml").resolve() == \
        (ROOT / "collection/meta/runtime.yml").resolve()


def tasks_of(items, base: Path):
    """The tasks of a task list, with blocks opened and statically imported files read."""
    for task in items or []:
        if not isinstance(task, dict):
            continue
        yield task
        for key in ("block", "rescue", "always"):
            yield from tasks_of(task.get(key), base)
        for key in ("import_tasks", "include_tasks", "ansible.builtin.import_tasks",
                    "ansible.builtin.include_tasks"):
            target = task.get(key)
            if isinstance(target, str) and "{{" not in target and (base / target).is_file():
                yield from tasks_of(yaml.safe_load((base / target).read_text()), base)


def role_has_run_once(play) -> bool:
    """Whether the play runs one of the roles (photo_sync_common builds once per run)."""
    return bool(short_names(play, []) or re.search(r"photosync\.fleet\.(%s)\b" % "|".join(ROLES),
                                                      yaml.safe_dump(play)))


def plays_with_run_once():
    for path in sorted((ROOT / "playbooks").glob("*.yml")):
        for play in yaml.safe_load(path.read_text()) or []:
            if "hosts" not in play:
                continue
            tasks = [task for part in ("pre_tasks", "tasks", "post_tasks", "handlers")
                     for task in tasks_of(play.get(part), path.parent)]
            if any(task.get("run_once") for task in tasks) or role_has_run_once(play):
                yield path.name, play


@pytest.mark.parametrize("playbook,play", list(plays_with_run_once()),
                         ids=lambda value: value if isinstance(value, str) else value["name"])
def test_a_play_that_runs_once_pins_the_linear_strategy(playbook, play):
    if (playbook, play["name"]) in STRATEGY_CHOSEN:
        assert play["strategy"].endswith("default('linear') }}"), play["strategy"]
    else:
        assert play.get("strategy") == "linear", f"{playbook}: {play['name']}"


def test_every_run_once_play_is_seen():
    names = {(playbook, play["name"]) for playbook, play in plays_with_run_once()}
    # The rollback's confirmation and the rollout's wave gate among them.
    assert {"rollback.yml", "rollout.yml"} <= {playbook for playbook, _ in names}
    assert STRATEGY_CHOSEN <= names
