"""What every bench shares: the test bed's services, whole-process timing, CPU and load capture.

Each bench (`python -m bench.run`, `python -m bench.fleet`, ...) imports this module
for the services it starts (PostgreSQL, SeaweedFS, gunicorn from tests/support/testbed.py)
and for `timed`, the one whole-process boundary every figure is measured on.

The test bed lives in tests/support/ (not shipped in the wheel); this module is the one
place the benches make it importable: when `support` is not importable already (pytest's
`pythonpath`, PYTHONPATH), tests/ goes on sys.path here.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BIN = Path(sys.executable).parent
T0 = time.monotonic()

try:
    from support import testbed
except ImportError:
    sys.path.insert(0, str(REPO / "tests"))  # the test bed: tests/support
    from support import testbed


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - T0:6.1f}s] {message}", flush=True)


def loadavg() -> float:
    """The 1-minute load average now (recorded before each measurement)."""
    return round(os.getloadavg()[0], 2)


def uptime() -> str:
    """`uptime`'s line (load averages), for a run's record; empty when it cannot run."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


# The machine ---------------------------------------------------------------------------

def tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text()
                          .splitlines() if line.startswith("MemTotal")))
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    return {
        "hostname_hash": hashlib.sha256(platform.node().encode()).hexdigest()[:8],
        "cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(), "os": _os_release(),
        "python": platform.python_version(),
        "versions": {
            "postgresql": tool_version([str(testbed.find_pg_bin() / "postgres"), "--version"]),
            "seaweedfs": tool_version([testbed.weed_binary(), "version"]),
            "rclone": tool_version(["rclone", "version"]),
            "wrk": tool_version(["wrk", "-v"]),
            "gunicorn": tool_version([str(BIN / "gunicorn"), "--version"]),
        },
    }


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


# Processes -------------------------------------------------------------------------------

def timed(cmd: list[str], env: dict | None = None, check: bool = True) -> dict:
    """Run a command; wall seconds, exit code, output and its peak RSS (VmHWM polled)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        peak = HighWater(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        peak.stop()
        out.seek(0)
        err.seek(0)
        result = {"seconds": round(seconds, 4), "rc": proc.returncode,
                  "max_rss_mb": round(peak.kb / 1024, 1),
                  "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
                  "stdout": out.read().decode(errors="replace"),
                  "stderr": err.read().decode(errors="replace")}
    if check and result["rc"] != 0:
        raise SystemExit(f"bench: {' '.join(cmd[:4])} failed ({result['rc']}):\n"
                         f"{result['stderr'][-3000:]}\n{result['stdout'][-1000:]}")
    return result


class HighWater:
    """The peak RSS of a process: its VmHWM, polled every 10 ms until it exits.

    (getrusage/wait4 ru_maxrss is no good here: Linux carries the parent's RSS at
    fork into the child's ru_maxrss across exec, so every child would report at
    least the harness's own size.) VmHWM is per address space, so it starts
    afresh at exec, and it only grows: polling misses at most the last 10 ms.
    """

    def __init__(self, pid: int):
        import threading
        self.pid, self.kb = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with open(f"/proc/{self.pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        self.kb = max(self.kb, int(line.split()[1]))
                        return
        except OSError:
            pass

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._read()
            self._stop.wait(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def api_downloads(server) -> int:
    """How many photo downloads the HO API has served so far (from its access log)."""
    try:
        return server.log_path.read_text(errors="replace").count("/download/")
    except OSError:
        return 0


def compile_package() -> None:
    """Byte-compile photo_sync as `pip install` does for a deployed wheel. The bench runs
    the package from its source tree, and PYTHONDONTWRITEBYTECODE (set on this machine)
    would otherwise make every timed CLI compile its modules again (about 50 ms of CPU a
    run: bench/profiles/README.md)."""
    import compileall
    import photo_sync
    compileall.compile_dir(str(Path(photo_sync.__file__).parent), quiet=1)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process, its reaped children and its live descendants (0 if gone)."""
    import psutil

    try:
        top = psutil.Process(pid)
        total = sum(top.cpu_times()[:4])  # user, system, children_user, children_system
        for child in top.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.NoSuchProcess:
                pass
        return total
    except psutil.NoSuchProcess:
        return 0.0


class Services:
    """PostgreSQL and SeaweedFS of the test bed under `root`, started and stopped together;
    `start()` byte-compiles photo_sync first, as a deployed wheel is."""

    def __init__(self, root: Path):
        self.root = root
        self.pg = self.s3 = None

    def start(self, pg_class=None) -> "Services":
        compile_package()
        log(f"starting PostgreSQL and SeaweedFS under {self.root}")
        self.pg = (pg_class or testbed.PostgresCluster)(self.root / "pg").start()
        self.s3 = testbed.SeaweedS3(self.root / "s3").start()
        return self

    def stop(self) -> None:
        if self.s3:
            self.s3.stop()
        if self.pg:
            self.pg.stop("immediate")


def public_argv(argv: list[str] | None) -> list[str]:
    """This run's arguments with the --out folder (a path of this machine) as a name."""
    words, skip = [], False
    for word in sys.argv[1:] if argv is None else argv:
        if skip:
            words.append("OUT_DIR")
        elif word.startswith("--out="):
            words.append("--out=OUT_DIR")
        else:
            words.append(word)
        skip = word == "--out"
    return words


def write_json(path: Path, results: dict, one_line: tuple[str, ...] = ()) -> Path:
    """`results` as indented JSON, except that every item of a list under a key in
    `one_line` (per-store rows, say) takes one line: the same document, a fraction of the
    lines."""
    rows: list[str] = []

    def mark(value):
        if isinstance(value, dict):
            return {k: ([_mark_row(rows, item) for item in v]
                        if k in one_line and isinstance(v, list) else mark(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    text = json.dumps(mark(results), indent=1, default=str)
    for index, row in enumerate(rows):
        text = text.replace(f'"\\u0000row{index}\\u0000"', row, 1)
    path.write_text(text + "\n")
    return path


def _mark_row(rows: list[str], item) -> str:
    rows.append(json.dumps(item, separators=(", ", ": "), default=str))
    return f"\0row{len(rows) - 1}\0"
