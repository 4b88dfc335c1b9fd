"""The store's photo server as the tests run it: `photo_server` (`photo-sync-edge serve`
under gunicorn on a free loopback port), and `StoreNginx`, the store's nginx in front of
it, rendered from the edge role's own site
template (`roles/edge_photo_sync/templates/photo-sync-edge-nginx.conf.j2`) with plain
Jinja2, inside a minimal nginx.conf, and run as `nginx -c FILE -p DIR` in the foreground.
The tests and bench/verify_serve.py run the very site config the role deploys.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import jinja2
import requests

from support.gateway import NGINX, Gateway
from support import testbed
from support.testbed import TestbedError, free_port

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "roles" / "edge_photo_sync" / "templates" / "photo-sync-edge-nginx.conf.j2"


def serve_command(*args: str) -> list[str]:
    """`photo-sync-edge serve ARGS`."""
    return [str(Path(sys.executable).parent / "photo-sync-edge"), "serve", *args]


@contextmanager
def photo_server(env: dict, root, wait_healthy: bool = True, workers: int = 1, threads: int = 4):
    """The photo server on a free loopback port; yields its base URL."""
    port = testbed.free_port()
    log = open(root / f"serve-{port}.log", "ab")
    process = subprocess.Popen(
        serve_command(), env={**os.environ, **env, "PHOTO_SYNC_EDGE_SERVE_BIND":
                              f"127.0.0.1:{port}", "PHOTO_SYNC_EDGE_SERVE_WORKERS": str(workers),
                              "PHOTO_SYNC_EDGE_SERVE_THREADS": str(threads)},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}"

    def up():
        if process.poll() is not None:
            raise testbed.TestbedError((root / f"serve-{port}.log").read_text()[-2000:])
        status = requests.get(f"{url}/health", timeout=10).status_code
        return status == 200 or not wait_healthy

    try:
        testbed.wait_for(up, 30, f"photo server on {url}")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def render_site(mirror_dir: str, backend: str, listen: str) -> str:
    """The role's site file for a mirror folder, a photo server host:port and a listen."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["comment"] = lambda text: "# " + text
    return env.get_template(TEMPLATE.name).render(
        ansible_managed="rendered by tests/support/store_nginx.py",
        _edge_photo_sync_serve_mirror_dir=mirror_dir,
        _edge_photo_sync_serve_backend=backend,
        edge_photo_sync_serve_bind=listen)


class StoreNginx(Gateway):
    """nginx serving `mirror_dir` in front of the photo server at `backend` (host:port),
    listening on `host`:<free port> (connect to `connect_host`). Started and stopped as the
    HO gateway is (`support.gateway.Gateway`); only the configuration differs."""

    def __init__(self, root: Path, mirror_dir: Path, backend: str, host: str = "127.0.0.1",
                 connect_host: str = "127.0.0.1", workers: int = 1):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.https_port = free_port()  # the port Gateway waits on
        self._url = f"http://{connect_host}:{self.port}"
        self.error_log = self.root / "error.log"
        self.conf = self.root / "nginx.conf"
        self.site = render_site(str(mirror_dir), backend, f"{host}:{self.port}")
        self.workers = workers
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self._url

    def write_config(self) -> Path:
        """The role's site inside a minimal nginx.conf; checked with nginx -t."""
        site = self.root / "site.conf"
        site.write_text(self.site)
        temp = self.root / "temp"
        temp.mkdir(exist_ok=True)
        # As root the workers would switch to nobody, who cannot enter pytest's 0700 folders;
        # the role's nginx runs as www-data over a mirror the agent makes world-readable.
        user = "user root;\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"{user}worker_processes {self.workers};\npid {self.root}/nginx.pid;\n"
            f"error_log {self.error_log} warn;\nevents {{ worker_connections 1024; }}\n"
            f"http {{\n    access_log off;\n    sendfile on;\n    tcp_nopush on;\n"
            f"    default_type application/octet-stream;\n"
            + "".join(f"    {kind}_temp_path {temp}/{kind};\n"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
            + f"    include {site};\n}}\n")
        checked = subprocess.run([NGINX, "-t", "-q", "-c", str(self.conf), "-p", str(self.root)],
                                 capture_output=True, text=True, timeout=30)
        if checked.returncode != 0:
            raise TestbedError(f"nginx -t refused {self.conf}: {checked.stderr}")
        return self.conf

    def pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True,
                             text=True).stdout
        return [self.process.pid, *(int(p) for p in out.split())]
