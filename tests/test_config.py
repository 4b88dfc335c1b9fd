"""Settings files: a malformed line is named by its number, never echoed (it may hold a
secret), by both CLIs. Nothing here needs a service: the settings fail first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SECRET = "s3cr3t-value-that-must-not-leak-0123456789"


@pytest.mark.parametrize("command, line", [
    (["photo-sync-edge", "status"], f"PHOTO_SYNC_EDGE_STORE_SECRET {SECRET}"),
    (["photo-sync-edge", "pull"], f"PHOTO_SYNC_EDGE_STORE SECRET={SECRET}"),
    (["photo-sync-ho", "store", "list"], f"PHOTO_SYNC_HO_JWT_SECRET: {SECRET}"),
])
def test_a_malformed_settings_line_is_named_not_echoed(tmp_path, command, line):
    config = tmp_path / "settings.env"
    config.write_text(f"# settings\nPHOTO_SYNC_X=1\n{line}\n")
    config.chmod(0o600)
    env = {"PATH": "/usr/bin:/bin"}  # no PHOTO_SYNC_* from the caller's environment
    result = subprocess.run([str(BIN / command[0]), "--config", str(config), *command[1:]],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"{config}:3" in result.stderr  # which file and line to fix
    # Not even a piece of it (the old message quoted the line's first 40 characters).
    assert SECRET[:6] not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
