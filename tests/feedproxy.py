"""A small rewriting proxy between the edge agent and the real HO API (tests only).

It forwards every request to HO unchanged, except that:

- a feed page (`GET .../sync/product-photos/`) can be rewritten by a function the
  test sets (`proxy.rewrite = fn(body) -> body`), to play a damaged or hostile HO;
- downloads can be held back for `download_delay` seconds, so parallel downloads
  overlap, and the proxy records which downloads were open at the same time
  (`peak_open`: the largest set of photo ids seen downloading at once).

Listens on 127.0.0.1 only; one thread per client connection; bodies are small
test photos, so they are read whole.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

LIST_RE = re.compile(r"/sync/product-photos/(\?|$)")
DOWNLOAD_RE = re.compile(r"/sync/product-photos/([0-9a-fA-F-]{36})/download/")
DROP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length",
                "content-encoding", "server", "date"}


class FeedProxy:
    """HO as the agent sees it, with feed pages rewritten on demand."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.rewrite = None  # fn(dict) -> dict | list | str, applied to every feed page
        self.download_delay = 0.0
        self.pages = 0
        self.open_downloads: set[str] = set()
        self.peak_open: set[str] = set()
        self.lock = threading.Lock()
        self.session = requests.Session()
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FeedProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.session.close()


class _Handler(BaseHTTPRequestHandler):
    owner: FeedProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # quiet
        pass

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def _handle(self) -> None:
        proxy = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in DROP_HEADERS and k.lower() != "host"}
        headers["Accept-Encoding"] = "identity"
        download = DOWNLOAD_RE.search(self.path)
        if download:
            photo_id = download.group(1)
            with proxy.lock:
                proxy.open_downloads.add(photo_id)
                if len(proxy.open_downloads) > len(proxy.peak_open):
                    proxy.peak_open = set(proxy.open_downloads)
        try:
            if download and proxy.download_delay:
                time.sleep(proxy.download_delay)
            answer = proxy.session.request(self.command, proxy.upstream + self.path,
                                           headers=headers, data=body, timeout=30)
            content = answer.content
        finally:
            if download:
                with proxy.lock:
                    proxy.open_downloads.discard(photo_id)
        if LIST_RE.search(self.path) and answer.status_code == 200 and proxy.rewrite:
            with proxy.lock:
                proxy.pages += 1
            content = json.dumps(proxy.rewrite(answer.json())).encode()
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in DROP_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)
