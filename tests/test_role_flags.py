"""Every boolean flag works when an operator types it: `-e flag=true|false|yes|no`.

On the command line `-e edge_photo_sync_serve_enabled=true` is the string "true", and
ansible-core 2.19 refuses a conditional derived from a string ("Conditional result
(True) was derived from value of type 'str'", issue 19); a string "false" is also
truthy wherever it is tested by Jinja's own `if`. So every read of a flag goes through
`| bool`.

The flags: every `type: bool` option of every role's meta/argument_specs.yml, and the
flags the playbooks document in their headers. The expressions: every conditional
(`when`, `failed_when`, `changed_when`, `until`, an assert's `that`) and every `{{ }}`
in the roles' task files, handlers and vars and in the playbooks that reads a flag,
taken from the files as they are. They are evaluated by ansible-playbook inside their
role (defaults and vars loaded, tests/support/role_probe.py), once per way of typing
the flags, all flags at once: each must give what it gives with real booleans (a JSON
-e), and no run may raise a conditional error. A static check covers the templates
(`.j2`), which only a rendering on a real host would reach.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from support.role_probe import ROOT, run_probes, task_results

# -e flags each playbook documents in its header comment.
PLAYBOOK_FLAGS = {
    "rollback.yml": ["confirm", "clear_binary", "remove_schema", "drop_data"],
    "verify.yml": ["repair", "fail_on_drift"],
    "status.yml": ["photo_sync_status_ho_view"],
    "build-wheels.yml": ["photo_sync_build_wheels", "photo_sync_s3_local", "photo_sync_pull_kit"],
    "demo-tls.yml": ["photo_sync_demo_tls"],
}
CONDITIONAL_KEYS = ("when", "failed_when", "changed_when", "until")
TASK_LISTS = ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always")
CONDITIONAL_ERROR = "Conditional result"
# (label, how the flags go on the command line): typed as strings, or one JSON -e.
TYPED = {"yes": "yes", "no": "no", "true": "true", "false": "false"}
NATIVE = {True: "native true", False: "native false"}


def role_flags() -> dict[str, set[str]]:
    """role -> its bool options, from every entry point of meta/argument_specs.yml."""
    flags = {}
    for spec_file in sorted(ROOT.glob("roles/*/meta/argument_specs.yml")):
        specs = yaml.safe_load(spec_file.read_text())["argument_specs"]
        flags[spec_file.parent.parent.name] = {
            name for spec in specs.values() for name, option in (spec.get("options") or {}).items()
            if option.get("type") == "bool"}
    return flags


ROLE_FLAGS = role_flags()
ALL_FLAGS = sorted(set().union(*ROLE_FLAGS.values(), *PLAYBOOK_FLAGS.values()))
# A flag's name, not an attribute, and not `name=value` quoted in a message.
FLAG_RE = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, ALL_FLAGS)) + r")\b(?!=(?!=))")


def jinja_expressions(value) -> list[str]:
    """The `{{ }}` expressions inside any string of a (nested) task value."""
    if isinstance(value, str):
        return re.findall(r"\{\{(.*?)\}\}", value, re.S)
    if isinstance(value, dict):
        return [e for v in value.values() for e in jinja_expressions(v)]
    if isinstance(value, list):
        return [e for v in value for e in jinja_expressions(v)]
    return []


def conditionals(task: dict) -> list[str]:
    """The task's conditional items (a list is ANDed, so each item stands alone)."""
    items = []
    for key in CONDITIONAL_KEYS:
        value = task.get(key)
        items += value if isinstance(value, list) else [value]
    assert_args = task.get("ansible.builtin.assert") or task.get("assert")
    if isinstance(assert_args, dict):
        that = assert_args.get("that")
        items += that if isinstance(that, list) else [that]
    return [item for item in items if isinstance(item, str)]


def walk_tasks(tasks) -> list[dict]:
    """Every task of a task list, into blocks."""
    found = []
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        found.append(task)
        for key in TASK_LISTS:
            found += walk_tasks(task.get(key))
    return found


def probe_tasks(tasks: list[dict], label: str, play_vars: dict | None = None) -> list[dict]:
    """Tasks that evaluate each flag-reading expression of `tasks` (named `label #n ...`)."""
    probes = []
    for task in tasks:
        body = {k: v for k, v in task.items() if k not in TASK_LISTS}
        for item in conditionals(task):
            if FLAG_RE.search(item):
                probes.append({"name": f"{label} #{len(probes)} when: {item.strip()}",
                               "ansible.builtin.debug": {"msg": "condition true"},
                               "when": item, "ignore_errors": True})
        for key in CONDITIONAL_KEYS:
            body.pop(key, None)
        for expression in jinja_expressions(body):
            if FLAG_RE.search(expression):
                probes.append({"name": f"{label} #{len(probes)} expression: {expression.strip()}",
                               "ansible.builtin.debug": {"msg": "{{ " + expression + " }}"},
                               "ignore_errors": True})
    if play_vars:
        for probe in probes:
            probe["vars"] = play_vars
    return probes


def role_probes() -> dict[tuple[str, str], list[dict]]:
    """Per role, one probe task file covering its tasks, handlers and vars."""
    probes = {}
    for role in sorted(ROLE_FLAGS):
        tasks = []
        for part in ("tasks", "handlers"):
            for path in sorted((ROOT / "roles" / role / part).glob("*.yml")):
                tasks += walk_tasks(yaml.safe_load(path.read_text()))
        for part in ("vars", "defaults"):
            path = ROOT / "roles" / role / part / "main.yml"
            if path.exists():
                tasks.append({"vars": yaml.safe_load(path.read_text()) or {}})
        found = probe_tasks(tasks, role)
        if found:
            probes[(role, "probe_flags.yml")] = found
    return probes


def playbook_probes() -> list[dict]:
    """The playbooks' flag-reading expressions, each with its play's vars."""
    probes = []
    for path in sorted((ROOT / "playbooks").glob("*.yml")):
        for number, play in enumerate(yaml.safe_load(path.read_text()) or [], 1):
            tasks = [task for key in TASK_LISTS for task in walk_tasks(play.get(key))]
            probes += probe_tasks(tasks, f"{path.name} play {number}", play.get("vars"))
    return probes


def outcome(result: dict) -> str:
    """What an operator would see of one probe: skipped, the value, or the error."""
    if result.get("skipped"):
        return "skipped"
    if result.get("failed"):
        return "error: " + str(result.get("msg"))
    return "value: " + json.dumps(result.get("msg"), sort_keys=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, str]]:
    """label -> probe name -> outcome, for each way of typing the flags (in parallel)."""
    probes = role_probes()
    probes[("photo_sync_common", "probe_playbooks.yml")] = playbook_probes()

    def run(label: str, extra_vars: dict | None, args: tuple[str, ...]) -> tuple[str, dict]:
        tmp = tmp_path_factory.mktemp(re.sub(r"\W", "_", label))
        results = task_results(run_probes(tmp, probes, extra_vars=extra_vars, args=args))
        return label, {name: outcome(result) for name, result in results.items()
                       if "#" in name}

    jobs = [(label, dict.fromkeys(ALL_FLAGS, typed), ()) for label, typed in TYPED.items()]
    jobs += [(label, None, ("-e", json.dumps(dict.fromkeys(ALL_FLAGS, value))))
             for value, label in NATIVE.items()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(lambda job: run(*job), jobs))


def test_every_flag_is_read_where_the_test_looks(runs):
    """Each flag is in an evaluated expression or in a template the static check reads."""
    probed = " ".join(runs["native true"])
    templates = " ".join(path.read_text() for path in sorted(ROOT.glob("roles/*/templates/*.j2")))
    missing = [flag for flag in ALL_FLAGS
               if not re.search(rf"(?<![\w.]){flag}\b", probed + " " + templates)]
    assert missing == []


@pytest.mark.parametrize("typed", TYPED)
def test_no_conditional_error_with_typed_flags(runs, typed):
    """`-e flag=<typed>` for every flag at once raises no conditional error anywhere."""
    errors = {name: out for name, out in runs[typed].items() if CONDITIONAL_ERROR in out}
    assert errors == {}


@pytest.mark.parametrize("typed", TYPED)
def test_typed_flags_act_as_booleans(runs, typed):
    """Each expression gives with `-e flag=<typed>` what it gives with a real boolean."""
    native = runs[NATIVE[typed in ("yes", "true")]]
    differ = {name: (out, native.get(name)) for name, out in runs[typed].items()
              if out != native.get(name)}
    assert differ == {}


def test_native_runs_evaluate(runs):
    """The reference runs mostly evaluate (a probe that only errors proves nothing)."""
    for label in NATIVE.values():
        evaluated = [out for out in runs[label].values() if not out.startswith("error")]
        assert len(evaluated) >= 0.9 * len(runs[label]), runs[label]


def test_playbooks_document_their_flags():
    """The flags the test sets are the ones the playbooks' headers tell operators about."""
    for playbook, flags in PLAYBOOK_FLAGS.items():
        lines = (ROOT / "playbooks" / playbook).read_text().splitlines(True)
        header = "".join(line for line in lines if line.startswith("#"))
        assert [flag for flag in flags if flag not in header] == [], playbook


def flag_reads_without_bool(path: Path) -> list[str]:
    """Flag reads in a file's Jinja (`{{ }}`, `{% %}`, conditionals) not followed by `| bool`."""
    text = path.read_text()
    spans = re.findall(r"\{\{.*?\}\}|\{%.*?%\}", text, re.S)
    if path.suffix == ".yml":
        for task in walk_tasks(yaml.safe_load(text) if path.parent.name != "vars" else []):
            spans += conditionals(task)
    bad = []
    for span in spans:
        span = re.sub(r"'[^']*'|\"[^\"]*\"", "''", span)  # a flag's name quoted is no read
        for match in FLAG_RE.finditer(span):
            rest = span[match.end():]
            if not re.match(r"""['"]?\]?\s*(\|\s*default\([^)]*\)\s*)?\|\s*bool\b""", rest):
                bad.append(f"{path.relative_to(ROOT)}: {span.strip()[:160]}")
    return bad


def test_every_flag_read_goes_through_bool():
    """Also in templates: `{% if flag %}` with the string "false" would render as true."""
    files = [path for pattern in ("roles/**/*.yml", "roles/**/*.j2", "playbooks/**/*.yml",
                                  "playbooks/**/*.j2")
             for path in sorted(ROOT.glob(pattern)) if "argument_specs" not in path.name]
    assert [bad for path in files for bad in flag_reads_without_bool(path)] == []
