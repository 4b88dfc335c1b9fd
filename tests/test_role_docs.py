"""A role's inputs are declared once, in meta/argument_specs.yml.

Its README's variable table is generated from it (scripts/role-docs.py) and must not
drift; its defaults/main.yml must give every input the default the spec promises (the
spec is what `ansible-doc` and the argument validation show an operator, defaults/ is
what the role really uses).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "role-docs.py"
ROLES = sorted(path.parent.parent.name for path in ROOT.glob("roles/*/meta/argument_specs.yml"))


def role_docs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, check=False)


def test_readme_tables_match_the_argument_specs():
    """Every role's README table is what its argument_specs generate."""
    result = role_docs("--check")
    assert result.returncode == 0, result.stderr


@pytest.fixture
def copy_root(tmp_path: Path) -> Path:
    """The roles' specs and READMEs in a scratch tree the script can rewrite."""
    for role in ROLES:
        for name in ("meta/argument_specs.yml", "README.md"):
            target = tmp_path / "roles" / role / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / "roles" / role / name, target)
    return tmp_path


def test_check_names_a_changed_variable_and_the_generator_fixes_it(copy_root: Path):
    spec_file = copy_root / "roles/edge_photo_sync/meta/argument_specs.yml"
    specs = yaml.safe_load(spec_file.read_text())
    options = specs["argument_specs"]["main"]["options"]
    options["edge_photo_sync_concurrency"]["default"] = 12
    options["edge_photo_sync_new_knob"] = {"type": "bool", "default": False,
                                           "description": "A knob added to the spec only."}
    spec_file.write_text(yaml.safe_dump(specs, sort_keys=False))

    drifted = role_docs("--check", "--root", str(copy_root))
    assert drifted.returncode == 1
    assert "`edge_photo_sync_concurrency` differs" in drifted.stderr
    assert "`edge_photo_sync_new_knob` is in meta/argument_specs.yml, not in the table" \
        in drifted.stderr
    assert "ho_sync_api" not in drifted.stderr

    assert role_docs("--root", str(copy_root)).returncode == 0
    readme = (copy_root / "roles/edge_photo_sync/README.md").read_text()
    assert "| `edge_photo_sync_concurrency` | int | `12` |" in readme
    assert "| `edge_photo_sync_new_knob` | bool | `false` | A knob added to the spec only. |" \
        in readme
    assert role_docs("--check", "--root", str(copy_root)).returncode == 0


def test_check_names_a_row_edited_by_hand(copy_root: Path):
    readme = copy_root / "roles/ho_sync_api/README.md"
    text = readme.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `ho_sync_api_threads`"))
    readme.write_text(text.replace(row, row.replace("Threads per", "Threads in each")))
    drifted = role_docs("--check", "--root", str(copy_root))
    assert drifted.returncode == 1
    assert "roles/ho_sync_api/README.md: `ho_sync_api_threads` differs" in drifted.stderr


def test_the_text_around_the_table_is_kept(copy_root: Path):
    readme = copy_root / "roles/ho_gateway/README.md"
    before = readme.read_text()
    readme.write_text(before.replace("## Variables", "## Variables\n\nA hand-written line."))
    assert role_docs("--root", str(copy_root)).returncode == 0
    assert "A hand-written line." in readme.read_text()
    assert readme.read_text().split("## Variables")[0] == before.split("## Variables")[0]


def test_a_readme_without_markers_is_an_error(copy_root: Path):
    readme = copy_root / "roles/photo_sync_common/README.md"
    readme.write_text(readme.read_text().split("<!-- role-docs: begin")[0])
    result = role_docs("--check", "--root", str(copy_root))
    assert result.returncode == 1
    assert "roles/photo_sync_common/README.md: no" in result.stderr


def role_inputs(role: str) -> dict[str, dict]:
    """option -> its spec, over every entry point (they must agree where they share one)."""
    specs = yaml.safe_load((ROOT / "roles" / role / "meta/argument_specs.yml").read_text())
    merged: dict[str, dict] = {}
    for entry, spec in specs["argument_specs"].items():
        for name, option in (spec.get("options") or {}).items():
            assert merged.setdefault(name, option) == option, f"{role} {entry}: {name}"
    return merged


@pytest.mark.parametrize("role", ROLES)
def test_defaults_equal_the_argument_specs(role):
    """defaults/main.yml, rendered by ansible's templating, is what the spec says."""
    inputs = role_inputs(role)
    path = ROOT / "roles" / role / "defaults/main.yml"
    raw = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    loader = DataLoader()
    defaults = (loader.load_from_file(str(path), trusted_as_template=True) or {}) \
        if path.exists() else {}
    templar = Templar(loader=loader, variables=defaults)

    undeclared = sorted(set(raw) - set(inputs))
    assert undeclared == [], "in defaults/main.yml, in no argument spec"
    wrong = {}
    for name, option in inputs.items():
        if option.get("required"):
            continue  # the spec promises no default (a placeholder in defaults/ is allowed)
        if "default" in option:
            promised = option["default"]
            # A default that is itself a template (e.g. the inventory hostname) is
            # compared as written; any other as ansible renders defaults/main.yml.
            if name not in raw:
                wrong[name] = (promised, "missing")
                continue
            actual = raw[name] if isinstance(promised, str) and "{{" in promised \
                else templar.template(defaults[name])
            if actual != promised:
                wrong[name] = (promised, actual)
        elif name in raw:
            # No fixed default: the spec says in words what it follows.
            assert "Default:" in str(option.get("description")), name
    assert wrong == {}
