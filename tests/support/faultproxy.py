"""A small fault-injecting HTTP proxy for the edge agent's tests.

It listens on 127.0.0.1 (HTTP/1.1, keep-alive, one thread per client
connection), forwards every request to the HO API and can be switched at run
time to:

- corrupt the body of one photo's download (bytes flipped, length and every
  header, X-Checksum included, kept as HO sent them);
- answer with a status (429 with `Retry-After`, 503, ...) for the next N
  requests or for T seconds;
- drop the connection without an answer, or cut a download's body short;
- rewrite feed pages (`GET .../sync/product-photos/`) with a function the test sets
  (`proxy.rewrite = fn(page) -> page`), to play a damaged or hostile HO;
- hold downloads back `download_delay` seconds, so parallel downloads overlap, and
  record which were open at once (`peak_open`: the largest set of photo ids).

The upstream is a string or a callable returning the HO base URL, so a
restarted HO (new port) can be followed. When the upstream cannot be reached
the proxy drops the client's connection, which is what the agent would see
from a dead HO.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DOWNLOAD_RE = re.compile(r"/sync/product-photos/([0-9a-fA-F-]{36})/download/")
LIST_RE = re.compile(r"/sync/product-photos/(\?|$)")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "content-length"}


@dataclass
class Fault:
    """One armed fault: `action` for the next `count` matching requests, or for `seconds`
    counted from the first request it hits (so a slow start does not use the window up)."""

    action: str  # status | drop | truncate
    count: int | None = None
    seconds: float | None = None
    status: int = 503
    retry_after: str | None = None
    match: str | None = None  # a substring of the request path; None = every request
    downloads_only: bool = False
    after: int = 0  # let this many matching requests through first
    seen: int = 0
    hits: int = 0
    until: float | None = None

    def applies(self, path: str) -> bool:
        if self.downloads_only and not DOWNLOAD_RE.search(path):
            return False
        return self.match is None or self.match in path

    def live(self, now: float) -> bool:
        if self.until is not None and now >= self.until:
            return False
        return self.count is None or self.hits < self.count

    def hit(self, now: float) -> None:
        if self.seconds is not None and self.until is None:
            self.until = now + self.seconds
        self.hits += 1


class FaultProxy:
    """HO as the agent sees it, with faults, rewritten feed pages and slow downloads on demand."""

    def __init__(self, upstream):
        self._upstream = upstream
        self.rewrite = None  # fn(dict) -> dict | list | str, applied to every feed page
        self.download_delay = 0.0
        self.pages = 0
        self.open_downloads: set[str] = set()
        self.peak_open: set[str] = set()
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._corrupt: set[str] = set()
        self.requests = 0
        self.injected: dict[str, int] = {}
        self.corrupted: dict[str, int] = {}
        # (monotonic time, method, path, status or what was done)
        self.log: list[tuple[float, str, str, int | str]] = []
        self._handlers: set = set()
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="faultproxy",
                                       daemon=True)

    # Life cycle -----------------------------------------------------------------------

    def start(self) -> "FaultProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        # Hang up on clients still connected and on HO, so no kept-alive connection
        # outlives the proxy (an HO stopping waits for those).
        with self._lock:
            handlers = list(self._handlers)
        for handler in handlers:
            handler._hang_up()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def upstream(self) -> str:
        value = self._upstream() if callable(self._upstream) else self._upstream
        return value.rstrip("/")

    # Switches -------------------------------------------------------------------------

    def corrupt(self, photo_id: str) -> None:
        with self._lock:
            self._corrupt.add(str(photo_id).lower())

    def uncorrupt(self, photo_id: str | None = None) -> None:
        with self._lock:
            if photo_id is None:
                self._corrupt.clear()
            else:
                self._corrupt.discard(str(photo_id).lower())

    def fail(self, status: int = 503, *, count: int | None = None, seconds: float | None = None,
             retry_after: str | int | None = None, match: str | None = None,
             downloads_only: bool = False, after: int = 0) -> Fault:
        """Answer `status` to the next `count` matching requests, or for `seconds` from the
        first one, or until reset (after letting `after` matching requests through)."""
        return self._arm(Fault("status", count, seconds, status,
                               None if retry_after is None else str(retry_after), match,
                               downloads_only, after))

    def drop(self, *, count: int | None = None, seconds: float | None = None,
             match: str | None = None, downloads_only: bool = False) -> Fault:
        """Close the client's connection without answering."""
        return self._arm(Fault("drop", count, seconds, match=match,
                               downloads_only=downloads_only))

    def truncate(self, *, count: int | None = None, seconds: float | None = None,
                 match: str | None = None, after: int = 0) -> Fault:
        """Send a download's headers and half its body, then close the connection."""
        return self._arm(Fault("truncate", count, seconds, match=match,
                               downloads_only=True, after=after))

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self._corrupt.clear()

    def _arm(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def _take_fault(self, path: str) -> Fault | None:
        now = time.monotonic()
        with self._lock:
            self.requests += 1
            self._faults = [f for f in self._faults if f.live(now)]
            for fault in self._faults:
                if fault.applies(path):
                    fault.seen += 1
                    if fault.seen <= fault.after:
                        continue
                    fault.hit(now)
                    key = fault.action if fault.action != "status" else str(fault.status)
                    self.injected[key] = self.injected.get(key, 0) + 1
                    return fault
        return None

    def _should_corrupt(self, path: str) -> bool:
        match = DOWNLOAD_RE.search(path)
        if not match:
            return False
        with self._lock:
            photo_id = match.group(1).lower()
            if photo_id in self._corrupt:
                self.corrupted[photo_id] = self.corrupted.get(photo_id, 0) + 1
                return True
        return False

    def _download_started(self, path: str) -> str | None:
        match = DOWNLOAD_RE.search(path)
        if not match:
            return None
        photo_id = match.group(1)
        with self._lock:
            self.open_downloads.add(photo_id)
            if len(self.open_downloads) > len(self.peak_open):
                self.peak_open = set(self.open_downloads)
        return photo_id

    def _download_ended(self, photo_id: str | None) -> None:
        if photo_id is not None:
            with self._lock:
                self.open_downloads.discard(photo_id)

    def _rewritten(self, path: str, status: int, data: bytes) -> bytes:
        if status != 200 or self.rewrite is None or not LIST_RE.search(path):
            return data
        with self._lock:
            self.pages += 1
        return json.dumps(self.rewrite(json.loads(data))).encode()

    def _record(self, method: str, path: str, outcome) -> None:
        with self._lock:
            self.log.append((time.monotonic(), method, path, outcome))


def flip_bytes(body: bytes) -> bytes:
    """Same length, different bytes (a few flipped in the middle and at the end)."""
    if not body:
        return body
    data = bytearray(body)
    for index in {len(data) // 2, len(data) // 3, len(data) - 1}:
        data[index] ^= 0xFF
    return bytes(data)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy
    _upstream_conn: http.client.HTTPConnection | None = None
    _upstream_base: str | None = None

    def log_message(self, format, *args) -> None:  # quiet
        pass

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def setup(self):
        super().setup()
        with self.owner._lock:
            self.owner._handlers.add(self)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.owner._lock:
                self.owner._handlers.discard(self)
            if self._upstream_conn is not None:
                self._upstream_conn.close()

    def _hang_up(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn = self._upstream_conn
        if conn is not None:
            conn.close()

    # ----------------------------------------------------------------------------------

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _handle(self) -> None:
        owner = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault = owner._take_fault(self.path)
        if fault is not None and fault.action == "drop":
            owner._record(self.command, self.path, "drop")
            return self._drop()
        if fault is not None and fault.action == "status":
            owner._record(self.command, self.path, fault.status)
            return self._answer_fault(fault)
        downloading = owner._download_started(self.path)
        try:
            if downloading and owner.download_delay:
                time.sleep(owner.download_delay)
            status, reason, headers, data = self._forward(body)
        except (OSError, http.client.HTTPException):
            owner._record(self.command, self.path, "upstream-down")
            return self._drop()
        finally:
            owner._download_ended(downloading)
        data = owner._rewritten(self.path, status, data)
        if status == 200 and owner._should_corrupt(self.path):
            data = flip_bytes(data)
            owner._record(self.command, self.path, "corrupted")
        else:
            owner._record(self.command, self.path, status)
        self.send_response(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault is not None and fault.action == "truncate" and status == 200:
            owner._record(self.command, self.path, "truncated")
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            return self._drop()
        self.wfile.write(data)

    def _answer_fault(self, fault: Fault) -> None:
        code = "rate_limited" if fault.status == 429 else "unavailable"
        payload = json.dumps({"error": code, "detail": "injected by the fault proxy"}).encode()
        self.send_response(fault.status)
        self.send_header("Content-Type", "application/json")
        if fault.retry_after is not None:
            self.send_header("Retry-After", fault.retry_after)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _forward(self, body: bytes):
        base = self.owner.upstream
        if self._upstream_conn is None or self._upstream_base != base:
            if self._upstream_conn is not None:
                self._upstream_conn.close()
            parsed = urllib.parse.urlsplit(base)
            self._upstream_conn = http.client.HTTPConnection(parsed.hostname, parsed.port,
                                                             timeout=30)
            self._upstream_base = base
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Connection"] = "keep-alive"
        if body or self.command in ("POST", "PUT"):
            headers["Content-Length"] = str(len(body))
        for attempt in range(2):
            conn = self._upstream_conn
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                response = conn.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A kept-alive upstream connection that HO closed: one fresh try.
                conn.close()
                if attempt:
                    raise
        out = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
        if response.will_close:
            conn.close()
        return response.status, response.reason, out, data
