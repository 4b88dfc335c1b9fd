"""`photo-sync-edge reset`: what a rollback does, as an engine operation (issue 9 item 2).

Statuses go back to pending (bytes optionally cleared), counts come back as JSON, a dry
run changes nothing, a store never migrated answers zeros, a running sync is never
reset under its feet, and only the database settings are needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import assert_edge_matches_ho

BIN = Path(sys.executable).parent


def edge_cli(database_url: str, *args: str, **env) -> subprocess.CompletedProcess:
    """The agent with nothing but a database URL (and `env`): reset needs no HO settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PHOTO_SYNC_EDGE_")}
    return subprocess.run([str(BIN / "photo-sync-edge"), *args],
                          env={**clean, "PHOTO_SYNC_EDGE_DATABASE_URL": database_url, **env},
                          capture_output=True, text=True, timeout=120)


def reset_json(database_url: str, *flags: str) -> dict:
    result = edge_cli(database_url, "reset", "--json", *flags)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def statuses(database_url: str) -> dict:
    """{sync_status: (rows, rows holding bytes, rows with an error)}"""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT sync_status, count(*), count(image_binary), count(sync_error) "
                            "FROM product_photo GROUP BY 1").fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


@pytest.fixture
def seeded(pg):
    """A migrated store database holding 2 synced photos, 1 failed, 1 syncing, 1 pending."""
    url = pg.create_db(f"reset_{uuid.uuid4().hex[:12]}")
    result = edge_cli(url, "schema", "apply")
    assert result.returncode == 0, result.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        for status, data, error in [("synced", b"one", None), ("synced", b"two", None),
                                    ("failed", None, "HTTP 404"), ("syncing", None, None),
                                    ("pending", b"three", None)]:
            conn.execute("INSERT INTO product_photo (id, product_id, sync_status, image_binary, "
                         "sync_error) VALUES (gen_random_uuid(), gen_random_uuid(), %s, %s, %s)",
                         (status, data, error))
    return url


BEFORE = {"synced": (2, 2, 0), "failed": (1, 0, 1), "syncing": (1, 0, 0), "pending": (1, 1, 0)}


def test_reset_dry_run_counts_and_changes_nothing(seeded):
    assert reset_json(seeded, "--dry-run") == {"reset": 4, "cleared": 0, "changed": True,
                                               "dry_run": True}
    assert reset_json(seeded, "--dry-run", "--clear-bytes") == {
        "reset": 4, "cleared": 3, "changed": True, "dry_run": True}
    assert statuses(seeded) == BEFORE
    text = edge_cli(seeded, "reset", "--dry-run", "--clear-bytes")
    assert text.returncode == 0
    assert "would reset 4 photos to pending, would clear the bytes of 3" in text.stdout
    assert statuses(seeded) == BEFORE


def test_reset_then_clear_bytes(seeded):
    assert reset_json(seeded) == {"reset": 4, "cleared": 0, "changed": True, "dry_run": False}
    assert statuses(seeded) == {"pending": (5, 3, 0)}, "errors cleared, bytes kept"
    assert reset_json(seeded, "--clear-bytes") == {"reset": 0, "cleared": 3, "changed": True,
                                                   "dry_run": False}
    assert statuses(seeded) == {"pending": (5, 0, 0)}
    assert reset_json(seeded, "--clear-bytes") == {"reset": 0, "cleared": 0, "changed": False,
                                                   "dry_run": False}
    text = edge_cli(seeded, "reset")
    assert text.returncode == 0 and "reset 0 photos to pending" in text.stdout


@pytest.mark.parametrize("setup", ["no-table", "legacy-table", "schema-removed"])
def test_reset_of_a_store_never_migrated_answers_zero(pg, setup):
    url = pg.create_db(f"reset_unmigrated_{setup.replace('-', '_')}")
    if setup == "legacy-table":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE product_photo (id uuid PRIMARY KEY, product_id uuid)")
    if setup == "schema-removed":  # a rollback that already removed the sync columns
        assert edge_cli(url, "schema", "apply").returncode == 0
        from photo_sync.edge import schema
        schema.ensure(url, state="absent")
    assert reset_json(url, "--clear-bytes") == {"reset": 0, "cleared": 0, "changed": False,
                                                "dry_run": False}


def test_reset_refuses_while_a_run_holds_the_lock(seeded):
    with psycopg.connect(seeded, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext('photo_sync_edge_run'))")
        for flags in ((), ("--dry-run",)):
            result = edge_cli(seeded, "reset", "--clear-bytes", *flags)
            assert result.returncode == 3, result.stderr
            assert "run is in progress" in result.stderr and "Traceback" not in result.stderr
    assert statuses(seeded) == BEFORE


@pytest.mark.parametrize("env, message", [
    ({"PHOTO_SYNC_EDGE_TABLE": "Photos; DROP TABLE x"}, "not a plain lower-case SQL identifier"),
    ({"PHOTO_SYNC_EDGE_DATABASE_URL": "postgresql://postgres:pw-31c7@127.0.0.1:1/none"},
     "cannot use the"),
], ids=["bad-table", "db-down"])
def test_reset_configuration_errors_exit_2(seeded, env, message):
    result = edge_cli(seeded, "reset", **env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "pw-31c7" not in result.stderr
    assert statuses(seeded) == BEFORE


def test_rollback_then_rollout_heals_the_store(ho_stack, photo_factory, make_edge):
    """Reset keeps good bytes (the next pull re-marks them without downloading); a reset
    that cleared them makes the next pull download them again."""
    ho = ho_stack("reset")
    ho.import_dir(photo_factory(6, seed=23, min_kb=10, max_kb=30, mean_kb=20))
    edge = make_edge(ho)
    result, summary = edge.pull("full")
    assert result.returncode == 0 and summary["downloaded"] == 6, result.stderr

    assert reset_json(edge.database_url) == {"reset": 6, "cleared": 0, "changed": True,
                                             "dry_run": False}
    result, summary = edge.pull("full")
    assert result.returncode == 0, result.stderr
    assert summary["downloaded"] == 0, "bytes kept by the reset are not downloaded again"
    assert_edge_matches_ho(edge, ho)

    assert reset_json(edge.database_url, "--clear-bytes") == {
        "reset": 6, "cleared": 6, "changed": True, "dry_run": False}
    result, summary = edge.pull("full")
    assert result.returncode == 0 and summary["downloaded"] == 6, result.stderr
    assert_edge_matches_ho(edge, ho)
