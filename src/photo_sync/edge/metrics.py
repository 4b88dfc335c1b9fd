"""Prometheus textfile metrics for node_exporter's textfile collector."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def render(summary, status: dict) -> str:
    mode = summary.mode
    lines = []

    def metric(name: str, help_text: str, value, labels: str = "", kind: str = "gauge"):
        if not any(line.startswith(f"# HELP {name} ") for line in lines):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{labels} {value}")

    now = time.time()
    ok = summary.status in ("ok", "partial")
    metric("photo_sync_last_run_timestamp_seconds", "When the last run ended.", f"{now:.0f}",
           f'{{mode="{mode}"}}')
    metric("photo_sync_last_run_success", "1 when the last run completed its walk.", int(ok),
           f'{{mode="{mode}"}}')
    if ok:
        metric("photo_sync_last_success_timestamp_seconds", "When a run last completed.",
               f"{now:.0f}", f'{{mode="{mode}"}}')
    metric("photo_sync_last_run_duration_seconds", "Duration of the last run.",
           summary.duration, f'{{mode="{mode}"}}')
    for name in ("downloaded", "updated", "deleted", "failed", "unchanged"):
        metric("photo_sync_last_run_photos", "Photos by outcome in the last run.",
               getattr(summary, name), f'{{mode="{mode}",outcome="{name}"}}')
    metric("photo_sync_last_run_bytes", "Bytes downloaded in the last run.", summary.bytes,
           f'{{mode="{mode}"}}')
    for state, count in sorted(status["counts_by_status"].items()):
        metric("photo_sync_photos", "Photos held by sync_status.", count, f'{{status="{state}"}}')
    metric("photo_sync_bytes_held", "Bytes of photos held in the store database.",
           status["bytes_held"])
    if status["lag_seconds"] is not None:
        metric("photo_sync_lag_seconds", "Seconds since a run last completed.",
               status["lag_seconds"])
    metric("photo_sync_pending_reports", "Status reports not yet delivered to HO.",
           status["pending_reports"])
    return "\n".join(lines) + "\n"


def write(path: str, summary, status: dict) -> None:
    """Write atomically, so the collector never reads half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".photo_sync.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(render(summary, status))
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
