"""A hostile (or broken) HO for the edge agent's transport tests: a real HTTP server on
127.0.0.1 speaking just enough of the sync API (token, one feed page, downloads, status
reports) to be believed, then misbehaving per photo or per page as a test asks:

- photo behaviours: `ok`, `endless` (a chunked body that runs on far past the listed
  size, generated, never held), `long_cl` (a Content-Length far above the listed size),
  `gzip_bomb` (Content-Encoding gzip: a few KB that inflate to GBs, generated on the fly),
  `gzip` (the right bytes, gzipped), `brotli` (labelled `br`, which the agent refuses),
  `trickle` (the right bytes at TRICKLE_RATE bytes/s), `redirect` (its presigned URL
  answers 302 to `redirect_to`; the API serves it);
- page behaviours: `ok`, `huge` (a page body streamed on and on), `trickle` (the page's
  body at a few bytes a second), `trickle_headers` (the headers one line at a time).

Every stream is bounded (bytes and seconds) and stops when the agent hangs up. Hits per
path are counted, so a test can assert that a URL was never fetched. `/s3/<id>` serves a
photo's bytes as a presigned S3 URL would (no auth); `tls=` serves https.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import ssl
import threading
import time
import uuid
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API = "/api/v1"
STREAM_LIMIT = 600 * 1024 * 1024  # the most any endless stream sends (bytes)
STREAM_SECONDS = 120.0  # ... and the longest it runs
TRICKLE_RATE = 1024  # bytes per second
BLOCK = bytes(range(256)) * 1024  # 256 KB of filler (not all zeros: not compressible away)
DOWNLOAD_RE = re.compile(rf"^{API}/sync/product-photos/([0-9a-f-]{{36}})/download/")
S3_RE = re.compile(r"^/s3/([0-9a-f-]{36})")


class HostileHO:
    """The server and what it serves; `url` is its base (http or https)."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.photos: dict[str, dict] = {}  # id -> feed item
        self.bodies: dict[str, bytes] = {}
        self.behaviour: dict[str, str] = {}
        self.page_behaviour = "ok"
        self.redirect_to = ""
        self.hits: Counter = Counter()
        self.reports: list[dict] = []
        self._lock = threading.Lock()
        self.tls = tls
        owner = self

        class Handler(_Handler):
            ho = owner

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            # Handshakes in the handler threads: a client that rejects the certificate
            # must not stall the accept loop.
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True,
                                                 do_handshake_on_connect=False)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="hostile-ho")

    def __enter__(self) -> "HostileHO":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        port = self.server.server_address[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"

    def add_photo(self, size: int = 30 * 1024, behaviour: str = "ok", *, data: bytes | None = None,
                  photo_id: str | None = None, version: int = 1, listed_size: int | None = None,
                  download_url: str | None = None) -> dict:
        """List a photo (random bytes of `size` unless `data`) served with `behaviour`;
        returns its feed item. Re-adding an id replaces it (a new version at HO)."""
        data = os.urandom(size) if data is None else data
        photo_id = photo_id or str(uuid.uuid4())
        item = {
            "id": photo_id, "product_id": str(uuid.uuid5(uuid.NAMESPACE_URL, photo_id)),
            "object_key": f"hostile/{photo_id}.jpg", "filename": f"{photo_id[:8]}.jpg",
            "size": len(data) if listed_size is None else listed_size,
            "content_type": "image/jpeg", "checksum": hashlib.md5(data).hexdigest(),
            "checksum_sha256": hashlib.sha256(data).hexdigest(), "version": version,
            "is_primary": True, "sort_order": 0,
            "updated_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).isoformat(),
            "image_url": f"{self.url}/images/{photo_id}.jpg", "deleted": False,
        }
        if download_url is not None:
            item["download_url"] = download_url
        with self._lock:
            self.photos[photo_id] = item
            self.bodies[photo_id] = data
            self.behaviour[photo_id] = behaviour
        return item

    def downloads(self, photo_id: str) -> int:
        """How often the API's download endpoint was asked for this photo."""
        return self.hits[f"{API}/sync/product-photos/{photo_id}/download/"]

    def page(self) -> bytes:
        with self._lock:
            photos = list(self.photos.values())
        return json.dumps({"photos": photos, "total": len(photos), "has_more": False,
                           "next_offset": len(photos), "next_cursor": "hostile-1"}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    ho: HostileHO

    def log_message(self, format, *args) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.settimeout(10)
            try:
                self.connection.do_handshake()
            except (OSError, ssl.SSLError):
                self.close_connection = True
                self.rfile = self.wfile = _Closed()

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ValueError):
            pass  # the agent hung up mid-stream: what these tests are about

    # Routing --------------------------------------------------------------------------

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, 16 * 1024 * 1024))
        self._hit()
        if self.path.startswith(f"{API}/auth/token/"):
            return self._json({"access": "hostile-token", "token_type": "Bearer",
                               "expires_in": 3600})
        if self.path.startswith(f"{API}/sync/product-photos/status/"):
            batch = json.loads(body).get("sync_batch", [])
            with self.ho._lock:
                self.ho.reports.extend(batch)
            return self._json({"message": "ok", "count": len(batch)})
        self._json({"error": "not_found", "detail": self.path}, 404)

    def do_GET(self) -> None:
        self._hit()
        path = self.path
        if path.startswith(f"{API}/sync/product-photos/") and "/download/" not in path:
            return self._page()
        match = DOWNLOAD_RE.match(path) or S3_RE.match(path)
        if match and match.group(1) in self.ho.photos:
            return self._photo(match.group(1), s3=path.startswith("/s3/"))
        self._json({"error": "not_found", "detail": path}, 404)

    def _hit(self) -> None:
        with self.ho._lock:
            self.ho.hits[self.path.split("?")[0]] += 1

    # Answers --------------------------------------------------------------------------

    def _json(self, payload, status: int = 200) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _page(self) -> None:
        how = self.ho.page_behaviour
        data = self.ho.page()
        if how == "ok":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif how == "huge":
            # A page that never ends: items streamed on and on (chunked, no length).
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            item = json.dumps(next(iter(self.ho.photos.values()))).encode() + b","
            self._chunks(iter(lambda: item * 256, None))
        elif how == "trickle":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self._trickle(data, 64)
        elif how == "trickle_headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            deadline = time.monotonic() + STREAM_SECONDS
            for n in range(90):  # http.client takes at most 100 headers
                if time.monotonic() > deadline:
                    break
                self.wfile.write(f"X-Filler-{n}: {'x' * 8}\r\n".encode())
                self.wfile.flush()
                time.sleep(0.5)
            self.close_connection = True

    def _photo(self, photo_id: str, s3: bool) -> None:
        ho = self.ho
        item, data, how = ho.photos[photo_id], ho.bodies[photo_id], ho.behaviour[photo_id]
        if how == "redirect" and s3:  # the presigned URL redirects; the API serves
            self.send_response(302)
            self.send_header("Location", f"{ho.redirect_to}/s3/{photo_id}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if not s3:
            self.send_header("X-Checksum", item["checksum"])
            self.send_header("X-Checksum-SHA256", item["checksum_sha256"])
            self.send_header("X-Version", str(item["version"]))
        if how in ("ok", "redirect"):
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif how == "gzip":  # honest, but encoded although the agent asked for identity
            packed = _gzip(data)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(packed)))
            self.end_headers()
            self.wfile.write(packed)
        elif how == "brotli":  # an encoding the agent does not decode (bytes are not br)
            self.send_header("Content-Encoding", "br")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif how == "endless":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunks(iter(lambda: BLOCK, None))
        elif how == "long_cl":
            self.send_header("Content-Length", str(STREAM_LIMIT))
            self.end_headers()
            self._raw_stream(iter(lambda: BLOCK, None))
        elif how == "gzip_bomb":
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunks(_gzip_of_zeros(gigabytes=4))
        elif how == "trickle":
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self._trickle(data, TRICKLE_RATE)
        else:
            raise ValueError(f"unknown behaviour {how!r}")

    # Streams (bounded in bytes and time; they end when the agent hangs up) ------------

    def _chunks(self, blocks) -> None:
        sent, deadline = 0, time.monotonic() + STREAM_SECONDS
        for block in blocks:
            if sent >= STREAM_LIMIT or time.monotonic() > deadline:
                break
            if block:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                sent += len(block)
        self.wfile.write(b"0\r\n\r\n")

    def _raw_stream(self, blocks) -> None:
        sent, deadline = 0, time.monotonic() + STREAM_SECONDS
        for block in blocks:
            if sent >= STREAM_LIMIT or time.monotonic() > deadline:
                break
            self.wfile.write(block)
            sent += len(block)
        self.close_connection = True

    def _trickle(self, data: bytes, rate: int) -> None:
        step = max(1, rate // 4)
        for offset in range(0, len(data), step):
            self.wfile.write(data[offset:offset + step])
            self.wfile.flush()
            time.sleep(0.25)


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    return packer.compress(data) + packer.flush()


def _gzip_of_zeros(gigabytes: int):
    """A gzip stream of `gigabytes` GB of zeros, made as it is sent (about 1 KB per MB)."""
    zeros = bytes(1024 * 1024)
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    for _ in range(gigabytes * 1024):
        yield packer.compress(zeros)
    yield packer.flush()


class _Closed:
    """Stands in for the streams of a connection whose TLS handshake failed."""

    closed = False

    def readline(self, *args) -> bytes:
        return b""

    def write(self, data) -> int:
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

