"""The agent's one HTTP client: every call it makes (HO's API, presigned S3 links) goes
through `HTTPClient.request`.

Built on http.client: a per-origin pool of keep-alive connections, TLS verified against
the configured CA bundle (the system CAs when none is set), one connect timeout and one
read timeout per socket, and every request attached to its attempt's `Watch`, whose
watchdog shuts the socket when the deadline passes, whatever phase the request is in.
Redirects are never followed; bodies are never decoded here (`body.pump` does that under
a bound). An answer's body is read with `Response.read1`; a connection goes back to the
pool only when its answer was read to the end.

Failures come as `NoAnswer` (no complete headers) or `BodyBroken` (after them); the
caller decides what to retry.
"""

from __future__ import annotations

import http.client
import select
import ssl
import threading
import urllib.parse

from photo_sync.edge.http.errors import BodyBroken, NoAnswer
from photo_sync.edge.http.watchdog import Watch

__all__ = ["HTTPClient", "Response"]

# A kept connection the server closed meanwhile fails like this on its next request.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
_FAILED = (OSError, http.client.HTTPException)


class _ReadTimeout:
    """Connects within the connection's `timeout`, then reads get `read_timeout`."""

    read_timeout: float | None = None

    def connect(self):
        super().connect()
        self.sock.settimeout(self.read_timeout)


class _HTTPConnection(_ReadTimeout, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_ReadTimeout, http.client.HTTPSConnection):
    pass


class Response:
    """An answer whose headers are in: `status`, `headers` (case-insensitive `get`), and
    the body through `read1`. `close()` returns the connection to its pool when the body
    was read to its end, else closes it."""

    def __init__(self, client: "HTTPClient", origin: tuple, conn, raw: http.client.HTTPResponse):
        self._client = client
        self._origin = origin
        self._conn = conn
        self._raw = raw
        self.status = raw.status
        self.reason = raw.reason
        self.headers = raw.headers

    def read1(self, amount: int) -> bytes:
        """Whatever one socket read brings, up to `amount` bytes (never decoded); b"" at the
        end. BodyBroken when the body ends before its Content-Length or its chunks end, or
        the connection fails."""
        raw = self._raw
        if raw.isclosed():
            return b""
        try:
            data = raw.read1(amount)
        except _FAILED as exc:
            raise BodyBroken(type(exc).__name__) from None
        if not data and raw.length:
            raise BodyBroken(f"body ended {raw.length} bytes short")
        if raw.length == 0:
            raw.close()  # the body is complete: the connection may carry the next request
        return data

    @property
    def complete(self) -> bool:
        """True when the whole body was read (the connection can carry the next request)."""
        return self._raw.isclosed()

    def close(self) -> None:
        """Give the connection back (body read to its end) or close it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self.complete and not self._raw.will_close:
            self._client._give_back(self._origin, conn)
        else:
            self._raw.close()
            conn.close()

    def __enter__(self) -> "Response":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HTTPClient:
    """Pooled HTTP/1.1 connections per origin (scheme, host, port), shared by threads.

    `ca_bundle`: PEM file of the CAs to trust for https ("" = the system CAs; the
    environment's REQUESTS_CA_BUNDLE plays no part). At most `pool_size` idle connections
    are kept per origin."""

    def __init__(self, *, user_agent: str, ca_bundle: str = "", connect_timeout: float = 10.0,
                 read_timeout: float = 60.0, pool_size: int = 16):
        self.headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
        self.ca_bundle = ca_bundle
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.pool_size = pool_size
        self._context: ssl.SSLContext | None = None
        self._idle: dict[tuple, list] = {}
        self._lock = threading.Lock()

    def _tls(self) -> ssl.SSLContext:
        # Made on first https use: loading the system CAs costs a few ms a run over http
        # does not need.
        with self._lock:
            if self._context is None:
                self._context = ssl.create_default_context(cafile=self.ca_bundle or None)
            return self._context

    def _connection(self, origin: tuple):
        scheme, host, port = origin
        if scheme == "https":
            conn = _HTTPSConnection(host, port, timeout=self.connect_timeout,
                                    context=self._tls())
        else:
            conn = _HTTPConnection(host, port, timeout=self.connect_timeout)
        conn.read_timeout = self.read_timeout
        return conn

    def _take(self, origin: tuple):
        """(an idle connection to `origin`, True) or (a new one, False)."""
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                conn = idle.pop() if idle else None
            if conn is None:
                return self._connection(origin), False
            if _alive(conn):
                return conn, True
            conn.close()

    def _give_back(self, origin: tuple, conn) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self.pool_size:
                idle.append(conn)
                return
        conn.close()

    def request(self, method: str, url: str, *, watch: Watch, headers: dict | None = None,
                body: bytes | None = None) -> Response:
        """Send a request and read its answer's headers, under `watch` (its connections are
        shut when it expires; once the headers are in, the body gets the rest of its full
        deadline). NoAnswer when no complete headers arrived."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        origin = (scheme, parts.hostname, parts.port or (443 if scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sent = {**self.headers, **(headers or {})}
        conn, reused = self._take(origin)
        while True:
            watch.attach(conn)
            try:
                conn.request(method, target, body=body, headers=sent)
                raw = conn.getresponse()
                break
            except _STALE as exc:
                conn.close()
                if not reused or watch.past():
                    raise _no_answer(exc, watch) from None
                conn, reused = self._connection(origin), False  # the server had closed it
            except _FAILED as exc:
                conn.close()
                raise _no_answer(exc, watch) from None
        if watch.expired:
            # Cut mid-headers: http.client takes the EOF for their end.
            raw.close()
            conn.close()
            raise NoAnswer("no complete headers within the deadline", timed_out=True)
        watch.answered()
        return Response(self, origin, conn, raw)

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def _alive(conn) -> bool:
    """False when a kept connection's socket is closed or readable (the server closed it,
    or sent something unasked): it cannot carry a request."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


def _no_answer(exc: Exception, watch: Watch) -> NoAnswer:
    timed_out = watch.past() or isinstance(exc, TimeoutError)
    tls = None
    if isinstance(exc, ssl.SSLCertVerificationError) and not timed_out:
        tls = f"certificate verify failed: {exc.verify_message}"
    return NoAnswer(type(exc).__name__, timed_out=timed_out, tls=tls)
