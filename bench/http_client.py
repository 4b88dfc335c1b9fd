#!/usr/bin/env python3
"""`python -m bench.http_client`: what the edge agent's HTTP client costs (docs/http-client.md).

Three figures, printed as JSON:

- `imports`: `python -X importtime -c "import M"`, the cumulative microseconds of the
  modules M imports (the interpreter's own start-up left out), median of --runs runs;
- `help_wall_s`: wall seconds of `photo-sync-edge --help`, median of --runs runs;
- with `--before REV`: `before_after`, the agent's own imports and `--help` wall for `src/`
  of git revision REV and for this checkout, measured alternately in the same minutes;
- `cpu_ms`: client CPU (`time.process_time`) per request against a local gunicorn
  (gthread, keep-alive) for a small JSON answer and a 200 KB body, through a requests
  Session (stream=True, the raw reads the agent did), a urllib3 PoolManager, and the
  agent's own `photo_sync.edge.http.HTTPClient`; median of --rounds rounds of --requests
  requests each, the clients alternating.

The machine may be shared: compare figures of one run with each other, and read `uptime`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench.common import testbed

BENCH = Path(__file__).resolve().parent
SMALL = json.dumps({"access": "x" * 40, "expires_in": 3600}).encode()
BLOB = os.urandom(200 * 1024)
MODULE_SETS = {
    "requests": "requests",
    "urllib3": "urllib3",
    "http.client+ssl+json+hashlib": "http.client, ssl, json, hashlib",
    "photo_sync.edge.client": "photo_sync.edge.client",
    "psycopg": "psycopg",
    "photo_sync.edge.cli": "photo_sync.edge.cli",
}
_MARK = "--bench-imports--"
# As on a store, where the installed package has its .pyc files: without them every run
# would compile photo_sync's sources again (this machine sets PYTHONDONTWRITEBYTECODE).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def app(environ, start_response):
    """The WSGI app gunicorn serves: /small (a token-sized JSON answer), /blob (200 KB)."""
    body, kind = (BLOB, "application/octet-stream") if environ["PATH_INFO"] == "/blob" else (
        SMALL, "application/json")
    start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]


def import_us(modules: str, env: dict | None = None) -> int:
    """Microseconds `import modules` takes in a fresh interpreter (-X importtime)."""
    code = f"import sys; sys.stderr.write({_MARK!r} + '\\n'); sys.stderr.flush(); import {modules}"
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], check=True,
                         capture_output=True, text=True, env=env or ENV).stderr
    total = 0
    for line in err.split(_MARK, 1)[1].splitlines():
        if not line.startswith("import time:"):
            continue
        _, cumulative, name = line.split("|")
        if not name.startswith("  "):  # a top-level import (nested ones are indented)
            total += int(cumulative)
    return total


def help_wall(env: dict | None = None) -> float:
    """Wall seconds of one `photo-sync-edge --help`."""
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "photo-sync-edge"), "--help"],
                   check=True, capture_output=True, env=env or ENV)
    return time.perf_counter() - started


def export_src(rev: str, dest: Path) -> Path:
    """`src/` of git revision `rev` unpacked under `dest`."""
    archive = dest / "src.tar"
    subprocess.run(["git", "-C", str(BENCH.parent), "archive", "-o", str(archive), rev, "src"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def before_after(rev: str, runs: int) -> dict:
    """The agent's imports and `--help` wall, `src/` of `rev` against this checkout's,
    alternating run by run (its PYTHONPATH puts the exported tree first)."""
    with tempfile.TemporaryDirectory() as folder:
        trees = {"before": {**ENV, "PYTHONPATH": str(export_src(rev, Path(folder)))},
                 "after": {**ENV, "PYTHONPATH": str(BENCH.parent / "src")}}
        figures = {name: {"photo_sync.edge.client": [], "photo_sync.edge.cli": [],
                          "help_wall_s": []} for name in trees}
        for env in trees.values():
            help_wall(env)  # writes the .pyc files
        for _ in range(runs):
            for name, env in trees.items():
                for module in ("photo_sync.edge.client", "photo_sync.edge.cli"):
                    figures[name][module].append(import_us(module, env) / 1000)
                figures[name]["help_wall_s"].append(help_wall(env))
    return {name: {key: round(statistics.median(values), 3) for key, values in kinds.items()}
            for name, kinds in figures.items()}


def serve(port: int) -> subprocess.Popen:
    """gunicorn with `app` on 127.0.0.1:`port`, once it answers."""
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "--chdir",
                             str(BENCH), "-b", f"127.0.0.1:{port}", "-w", "1", "--threads", "2",
                             "--keep-alive", "30", "--log-level", "warning", "http_client:app"])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("gunicorn did not start")


def with_requests(base: str):
    import requests

    session = requests.Session()
    session.headers["Accept-Encoding"] = "identity"

    def get(path: str) -> int:
        response = session.get(base + path, stream=True, timeout=(10, 60), verify=True,
                               allow_redirects=False)
        size = 0
        while data := response.raw.read1(256 * 1024, decode_content=False):
            size += len(data)
        response.close()
        return size
    return get


def with_urllib3(base: str):
    import urllib3

    pool = urllib3.PoolManager(maxsize=4, retries=False,
                               timeout=urllib3.Timeout(connect=10, read=60))

    def get(path: str) -> int:
        response = pool.request("GET", base + path, preload_content=False, redirect=False,
                                headers={"Accept-Encoding": "identity"})
        size = 0
        while data := response.read1(256 * 1024, decode_content=False):
            size += len(data)
        response.release_conn()
        return size
    return get


def with_agent(base: str):
    from photo_sync.edge.http.client import HTTPClient
    from photo_sync.edge.http.watchdog import WATCHDOG

    client = HTTPClient(user_agent="bench", pool_size=4)

    def get(path: str) -> int:
        with WATCHDOG.start(60, 10) as watch, client.request("GET", base + path,
                                                             watch=watch) as response:
            size = 0
            while data := response.read1(256 * 1024):
                size += len(data)
        return size
    return get


CLIENTS = {"requests": with_requests, "urllib3": with_urllib3, "agent": with_agent}


def cpu_ms(get, path: str, count: int, size: int) -> float:
    """Client CPU milliseconds per GET of `path`."""
    started = time.process_time()
    for _ in range(count):
        assert get(path) == size
    return (time.process_time() - started) * 1000 / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--before", metavar="REV",
                        help="also compare the agent's start-up with git revision REV")
    args = parser.parse_args()
    result = {"uptime": os.getloadavg()}
    import_us("photo_sync.edge.cli")  # writes the .pyc files
    result["imports_ms"] = {
        name: round(statistics.median(import_us(mods) for _ in range(args.runs)) / 1000, 1)
        for name, mods in MODULE_SETS.items()}
    help_wall()  # warm the page cache
    result["help_wall_s"] = round(statistics.median(help_wall() for _ in range(args.runs)), 3)
    if args.before:
        result["before_after"] = before_after(args.before, args.runs)
    if not args.skip_cpu:
        port = testbed.free_port()
        server = serve(port)
        try:
            base = f"http://127.0.0.1:{port}"
            gets = {name: make(base) for name, make in CLIENTS.items()}
            figures = {name: {"small": [], "200KB": []} for name in gets}
            for _ in range(args.rounds):
                for name, get in gets.items():
                    figures[name]["small"].append(cpu_ms(get, "/small", args.requests,
                                                         len(SMALL)))
                    figures[name]["200KB"].append(cpu_ms(get, "/blob", args.requests // 2,
                                                         len(BLOB)))
            result["cpu_ms"] = {name: {kind: round(statistics.median(values), 3)
                                       for kind, values in kinds.items()}
                                for name, kinds in figures.items()}
        finally:
            server.terminate()
            server.wait(timeout=30)
    result["uptime"] = [result["uptime"], os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
