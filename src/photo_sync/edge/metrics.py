"""Prometheus textfile metrics for node_exporter's textfile collector.

`monitoring/photo-sync.rules.yml` alerts on these names; keep them stable (a
rename silently disables an alert). The pull writes PHOTO_SYNC_EDGE_METRICS_FILE;
verify writes its own file beside it (`*_verify.prom`), and so does a run while it runs
(`*_run.prom`, see `write_run`).

The run signal's invariant: `photo_sync_run_in_progress` is 1 from the moment a run holds
the run lock until it ends, with `photo_sync_run_started_timestamp_seconds` the start of
that run. It is written before the run does anything else and cleared last, so a run
killed mid-way (SIGKILL, OOM, power) leaves it at 1 with its old start time: the "run
longer than an hour" alert then fires for the dead run as it would for a stuck one, until
the next run takes the lock and writes its own start.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
from pathlib import Path

from photo_sync import protocol


def _writer(lines: list[str]):
    def metric(name: str, help_text: str, value, labels: str = "", kind: str = "gauge"):
        if not any(line.startswith(f"# HELP {name} ") for line in lines):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{labels} {value}")
    return metric


def failures_by_kind(summary) -> dict[str, int]:
    """{failure kind (protocol.FAILURE_*): photos of the run that failed so}, every kind
    present. From the engine's count of every failure; a summary that has none (one put
    together by hand, with `failures` only) is counted from the failures it lists, and a
    listed failure without a kind counts as a checksum mismatch only when its text says
    "mismatch", as this module counted before failures had kinds."""
    counts = dict.fromkeys(protocol.FAILURE_KINDS, 0)
    if getattr(summary, "failed_by_kind", None):
        counts.update(summary.failed_by_kind)
        return counts
    for failure in summary.failures:
        kind = failure.get("kind")
        if kind is None:
            kind = (protocol.FAILURE_CHECKSUM_MISMATCH
                    if "mismatch" in (failure.get("error") or "") else None)
        if kind is not None:
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def checksum_mismatches(summary) -> int:
    """Photos of a run whose bytes failed MD5 or SHA-256 verification (their kind is
    protocol.FAILURE_CHECKSUM_MISMATCH; the words of the error do not count)."""
    return failures_by_kind(summary)[protocol.FAILURE_CHECKSUM_MISMATCH]


def render(summary, status: dict, database_bytes: int | None = None,
           database_dir: str | None = None) -> str:
    """The pull's textfile: last run, photos by status, bytes held, lag, database size, and
    the mount point of the file system holding `database_dir` (PostgreSQL's data
    directory, when the agent could see it)."""
    mode = summary.mode
    lines: list[str] = []
    metric = _writer(lines)

    now = time.time()
    ok = summary.status in ("ok", "partial")
    metric("photo_sync_last_run_timestamp_seconds", "When the last run ended.", f"{now:.0f}",
           f'{{mode="{mode}"}}')
    metric("photo_sync_last_run_success", "1 when the last run completed its walk.", int(ok),
           f'{{mode="{mode}"}}')
    if ok:
        metric("photo_sync_last_success_timestamp_seconds", "When a run last completed.",
               f"{now:.0f}", f'{{mode="{mode}"}}')
    elif status.get("last_success_at"):
        # A failed run must not erase the last success: the "not completed within an
        # hour" alert measures from it. No mode label: the database does not say which.
        last = dt.datetime.fromisoformat(status["last_success_at"])
        metric("photo_sync_last_success_timestamp_seconds", "When a run last completed.",
               f"{last.timestamp():.0f}")
    metric("photo_sync_last_run_duration_seconds", "Duration of the last run.",
           summary.duration, f'{{mode="{mode}"}}')
    for name in ("downloaded", "updated", "deleted", "failed", "unchanged"):
        metric("photo_sync_last_run_photos", "Photos by outcome in the last run.",
               getattr(summary, name), f'{{mode="{mode}",outcome="{name}"}}')
    metric("photo_sync_last_run_bytes", "Bytes downloaded in the last run.", summary.bytes,
           f'{{mode="{mode}"}}')
    # The failure rate's denominator: photos the run dealt with (retries included).
    total = max(summary.listed, summary.downloaded + summary.updated + summary.unchanged
                + summary.failed)
    metric("photo_sync_last_run_total_photos", "Photos the last run listed or retried.", total,
           f'{{mode="{mode}"}}')
    by_kind = failures_by_kind(summary)
    metric("photo_sync_last_run_checksum_mismatches",
           "Photos of the last run whose downloaded bytes failed checksum verification.",
           by_kind[protocol.FAILURE_CHECKSUM_MISMATCH], f'{{mode="{mode}"}}')
    for kind, count in sorted(by_kind.items()):
        metric("photo_sync_last_run_failures", "Photos that failed in the last run, by kind.",
               count, f'{{mode="{mode}",kind="{kind}"}}')
    for state, count in sorted(status["counts_by_status"].items()):
        metric("photo_sync_photos", "Photos held by sync_status.", count, f'{{status="{state}"}}')
    metric("photo_sync_bytes_held", "Bytes of photos held in the store database.",
           status["bytes_held"])
    if status["lag_seconds"] is not None:
        metric("photo_sync_lag_seconds", "Seconds since a run last completed.",
               status["lag_seconds"])
    metric("photo_sync_pending_reports", "Status reports not yet delivered to HO.",
           status["pending_reports"])
    database_bytes = status.get("database_bytes", database_bytes)
    if database_bytes is not None:
        metric("photo_sync_database_size_bytes", "Size of the store database on disk.",
               int(database_bytes))
    mountpoint = mountpoint_of(database_dir) if database_dir else None
    if mountpoint is not None:
        # The storage alert joins node_exporter's node_filesystem_* on this label: the
        # database's own file system, whatever the layout (its own mount, or /).
        metric("photo_sync_database_filesystem_info",
               "1 for the mount point of the file system holding PostgreSQL's data directory.",
               1, f'{{mountpoint="{_label_value(mountpoint)}"}}')
    return "\n".join(lines) + "\n"


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def mountpoint_of(path: str) -> str | None:
    """The mount point of the file system holding `path` (as node_exporter's `mountpoint`
    label names it), or None when `path` does not exist here or cannot be looked at. Only
    the path and its parents are stat()ed, so a data directory the agent may not enter
    (PostgreSQL's is 0700) still answers."""
    try:
        current = os.path.realpath(path)
        device = os.stat(current).st_dev
        while current != os.path.dirname(current):
            parent = os.path.dirname(current)
            if os.stat(parent).st_dev != device:
                break
            current = parent
    except OSError:
        return None
    return current


def render_verify(result) -> str:
    """Verify's textfile: when it last ran, and the photos it found per kind of drift."""
    lines: list[str] = []
    metric = _writer(lines)
    metric("photo_sync_verify_timestamp_seconds", "When verify last compared the store with HO.",
           f"{time.time():.0f}")
    for kind in ("missing", "extra", "stale", "corrupt"):
        metric("photo_sync_verify_photos", "Photos verify found differing from HO, by kind.",
               len(getattr(result, kind)), f'{{kind="{kind}"}}')
    metric("photo_sync_verify_duration_seconds", "Duration of the last verify.", result.duration)
    return "\n".join(lines) + "\n"


def _write_atomically(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".photo_sync.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def write(path: str, summary, status: dict, database_bytes: int | None = None,
          database_dir: str | None = None) -> None:
    """Write the pull's metrics atomically, so the collector never reads half a file."""
    _write_atomically(path, render(summary, status, database_bytes, database_dir))


def run_metrics_path(metrics_file: str) -> str:
    """The run signal's textfile beside the pull's (`photo_sync.prom` -> `photo_sync_run.prom`)."""
    path = Path(metrics_file)
    return str(path.with_name(f"{path.stem}_run{path.suffix or '.prom'}"))


def render_run(mode: str, started_at: float, running: bool) -> str:
    """The run signal: whether a run is in progress, and when the current (or last) run
    started (see the module docstring)."""
    lines: list[str] = []
    metric = _writer(lines)
    metric("photo_sync_run_in_progress", "1 while a sync run holds the run lock.", int(running),
           f'{{mode="{mode}"}}')
    metric("photo_sync_run_started_timestamp_seconds",
           "When the run in progress (or else the last run) started.", f"{started_at:.0f}",
           f'{{mode="{mode}"}}')
    return "\n".join(lines) + "\n"


def write_run(metrics_file: str, mode: str, started_at: float, *, running: bool) -> None:
    """Write the run signal atomically beside `metrics_file`: `running=True` as a run
    starts, False as it ends (a run that never ends leaves the first)."""
    _write_atomically(run_metrics_path(metrics_file), render_run(mode, started_at, running))


def write_verify(path: str, result) -> None:
    """Write verify's metrics atomically (see `photo_sync.edge.verify.verify_metrics_path`)."""
    _write_atomically(path, render_verify(result))
