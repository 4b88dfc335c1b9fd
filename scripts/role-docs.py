#!/usr/bin/env python3
"""The variable tables of the roles' READMEs, generated from meta/argument_specs.yml.

Each role's argument_specs is the one declaration of its inputs; its README.md shows
them as one table per entry point between the markers below, and nothing else there is
touched. Edit the argument_specs, then run this.

    scripts/role-docs.py            # rewrite every roles/*/README.md table
    scripts/role-docs.py --check    # exit 1 and name each README and variable that drifted
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BEGIN = ("<!-- role-docs: begin. Generated from meta/argument_specs.yml by "
         "scripts/role-docs.py; edit the specs, not this table. -->")
END = "<!-- role-docs: end -->"

# ansible-doc's markup in descriptions, as Markdown.
MARKUP = [
    (re.compile(r"\b[CIOV]\(((?:[^()]|\([^()]*\))*)\)"), r"`\1`"),
    (re.compile(r"\bB\(((?:[^()]|\([^()]*\))*)\)"), r"**\1**"),
    (re.compile(r"\bU\(([^()]*)\)"), r"<\1>"),
    (re.compile(r"\bL\(([^(),]*),\s*([^()]*)\)"), r"[\1](\2)"),
]


def markdown(text: str) -> str:
    """One description string as Markdown for a table cell."""
    for pattern, replacement in MARKUP:
        text = pattern.sub(replacement, text)
    return text.replace("|", "\\|").strip()


def description(option: dict) -> str:
    """The option's description, its choices, and whether it is a secret."""
    text = option.get("description", "")
    if isinstance(text, list):
        text = " ".join(text)
    parts = [markdown(text)]
    if option.get("choices"):
        parts.append("One of " + ", ".join(f"`{c}`" for c in option["choices"]) + ".")
    if option.get("no_log"):
        parts.append("Secret (`no_log`).")
    return " ".join(part for part in parts if part)


def type_name(option: dict) -> str:
    """`str`, `bool`, `list of str`, ..."""
    kind = option.get("type", "str")
    if kind == "list" and option.get("elements"):
        return f"list of {option['elements']}"
    return kind


def default(option: dict) -> str:
    """The default as YAML would write it, or what stands instead of one."""
    if option.get("required"):
        return "**required**"
    if "default" not in option:
        return "(see description)" if "Default:" in str(option.get("description")) else "none"
    value = option["default"]
    if value == "":
        return '`""`'
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return "`" + text.replace("|", "\\|") + "`"


def rows(options: dict, prefix: str = "") -> list[str]:
    """Table rows of the options, suboptions of a list of dicts as `name[].sub`."""
    lines = []
    for name, option in (options or {}).items():
        lines.append(f"| `{prefix}{name}` | {type_name(option)} | {default(option)} | "
                     f"{description(option)} |")
        if option.get("options"):
            nested = "[]." if option.get("type") == "list" else "."
            lines += rows(option["options"], f"{prefix}{name}{nested}")
    return lines


def tables(specs: dict) -> str:
    """The generated part of a README: one section and table per entry point."""
    out = []
    for entry, spec in specs.items():
        title = f"### Entry point `{entry}`"
        if entry != "main":
            title += f" (`tasks_from: {entry}.yml`)"
        out += [title, ""]
        if spec.get("short_description"):
            out += [spec["short_description"].rstrip(".") + ".", ""]
        out += ["| variable | type | default | description |", "|---|---|---|---|"]
        out += rows(spec.get("options")) + [""]
    return "\n".join(out)


def generated(readme: str, specs: dict) -> str:
    """The README with its table between the markers regenerated."""
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"no {BEGIN!r} ... {END!r} markers")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{tables(specs)}\n{END}{tail}"


def variable_rows(text: str) -> dict[str, str]:
    """variable -> its table row, for naming what drifted."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"\| `([^`]+)` \|", line)
        if match:
            found.setdefault(match.group(1), line)
    return found


def drift(path: Path, old: str, new: str) -> list[str]:
    """One line per variable whose row is missing, extra or different."""
    old_rows, new_rows = variable_rows(old), variable_rows(new)
    lines = []
    for name in new_rows:
        if name not in old_rows:
            lines.append(f"{path}: `{name}` is in meta/argument_specs.yml, not in the table")
        elif old_rows[name] != new_rows[name]:
            lines.append(f"{path}: `{name}` differs from meta/argument_specs.yml")
    lines += [f"{path}: `{name}` is in the table, not in meta/argument_specs.yml"
              for name in old_rows if name not in new_rows]
    if not lines:
        diff = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
        lines = [f"{path}: the table's text differs:"] + list(diff)[2:12]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 when a README's table drifted")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    problems = []
    for spec_file in sorted(args.root.glob("roles/*/meta/argument_specs.yml")):
        role = spec_file.parent.parent
        readme = role / "README.md"
        shown = readme.relative_to(args.root)
        specs = yaml.safe_load(spec_file.read_text())["argument_specs"]
        old = readme.read_text() if readme.exists() else ""
        try:
            new = generated(old, specs)
        except ValueError as exc:
            problems.append(f"{shown}: {exc}: add them where the table goes")
            continue
        if new == old:
            continue
        if args.check:
            problems += drift(shown, old, new)
        else:
            readme.write_text(new)
            print(f"{shown}: table regenerated")
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print("run scripts/role-docs.py to regenerate the tables", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
