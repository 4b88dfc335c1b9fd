"""The repository documents itself: docs/api.md is what the served OpenAPI document says,
docs/edge-schema.md is what the migration declares, every link in the docs resolves, and no
file points at documents that are not in the repository."""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from photo_sync import errors
from photo_sync.edge import schema
from photo_sync.ho.openapi import spec

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def _api_docs():
    """scripts/api-docs.py as a module (its name has a hyphen)."""
    loader = importlib.util.spec_from_file_location("api_docs", REPO / "scripts" / "api-docs.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def test_api_md_is_what_the_openapi_document_renders():
    assert (DOCS / "api.md").read_text() == _api_docs().render(), (
        "docs/api.md is stale against photo_sync.ho.openapi.spec(): run "
        "`python scripts/api-docs.py`")


def test_api_md_names_every_endpoint_parameter_field_status_and_header():
    page, doc = (DOCS / "api.md").read_text(), spec()
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            assert f"### `{method.upper()} {path}`" in page
            for param in op.get("parameters", []):
                assert f"| `{param['name']}` | {param['in']} |" in page, param["name"]
            for response in op["responses"].values():
                for header in response.get("headers", {}):
                    assert f"| `{header}` |" in page, header
    for field in doc["components"]["schemas"]["Photo"]["properties"]:
        assert f"| `{field}` |" in page, field


def test_a_changed_openapi_document_changes_api_md():
    # A deep copy: spec() shares openapi.PHOTO, which other tests in this process read.
    doc = copy.deepcopy(spec())
    doc["components"]["schemas"]["Photo"]["properties"]["shelf_label"] = {
        "type": "string", "description": "where the shelf label goes"}
    doc["paths"]["/api/v1/sync/product-photos/"]["get"]["parameters"].append(
        {"name": "product_id", "in": "query", "schema": {"type": "string"},
         "description": "one product"})
    page = _api_docs().render(doc)
    assert "| `shelf_label` | string | no | where the shelf label goes |" in page
    assert "| `product_id` | query | string | no | one product |" in page
    assert page != (DOCS / "api.md").read_text()


def test_api_docs_check_mode_agrees():
    run = subprocess.run([sys.executable,
                          str(REPO / "scripts" / "api-docs.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def _table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of the table whose header line is `header`, header and rule left out."""
    lines = text.splitlines()
    at = lines.index(header)
    rows = []
    for line in lines[at + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_edge_schema_md_matches_the_migration_declarations():
    page = (DOCS / "edge-schema.md").read_text()
    columns = [(name.strip("`"), decl.strip("`"))
               for name, decl, _ in _table_rows(page, "| column | type | meaning |")]
    assert columns == schema.COLUMNS
    indexes = {on.strip("`"): name.strip("`")
               for name, on in _table_rows(page, "| index | on |")}
    assert indexes == {col: name.format(table="product_photo")
                       for col, name in schema.INDEXES.items()}
    tables = [name.strip("`") for name, _ in _table_rows(page, "| table | holds |")]
    assert tables == list(schema.AGENT_TABLES)
    assert schema.AGENT_PRIVILEGES in page


def test_operator_interface_exit_codes_are_the_error_models():
    page = (DOCS / "operator-interface.md").read_text()
    rows = _table_rows(page, "| code | name | meaning |")
    named = {name.strip("`"): int(code) for code, name, _ in rows}
    declared = {name: value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    assert named == declared
    assert "docs/operator-interface.md" in (REPO / "src/photo_sync/errors.py").read_text()


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True, timeout=60).stdout.decode()
        return [REPO / name for name in out.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "build", "__pycache__", ".pytest_cache"}
        return [p for p in REPO.rglob("*") if p.is_file() and not skip & set(p.parts)]


# Split so that this file does not match itself.
OUTSIDE = ["ARCHITECTURE" + ".md", "TESTING" + ".md", "ORIGINAL_DESIGN" + ".md",
           "../" + "shared", "project " + "workspace"]


def test_no_file_points_at_documents_outside_the_repository():
    hits = []
    for path in _tracked_files():
        if not path.is_file():
            continue
        text = path.read_bytes()
        if b"\0" in text[:4096]:
            continue
        text = text.decode(errors="replace")
        hits += [f"{path.relative_to(REPO)}: {word}" for word in OUTSIDE if word in text]
    assert not hits, "pointers to documents that are not in the repository:\n" + "\n".join(hits)


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", ["README.md", *sorted(
    str(p.relative_to(REPO)) for p in DOCS.glob("*.md"))])
def test_every_relative_link_resolves(page):
    path = REPO / page
    broken = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        file_part = target.split("#", 1)[0]
        if not (path.parent / file_part).resolve().exists():
            broken.append(target)
    assert not broken, f"{page} links to files that do not exist: {broken}"
