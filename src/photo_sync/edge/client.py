"""The edge's HTTP client for the HO sync API.

One pooled session shared by the download threads; retries with exponential
backoff and jitter on connection errors and 5xx; honours 429 Retry-After;
renews the token once on a 401. When HO stays unreachable the run is
aborted (HOUnreachable) rather than marking every photo failed.

Whatever HO (or a presigned S3 URL) sends, the agent's memory and time stay bounded:

- Memory: a photo's body goes into one buffer of its listed size, allocated before the
  first byte, and is cut off (BodyTooLarge) as soon as it runs past min(listed size,
  PHOTO_SYNC_EDGE_MAX_PHOTO_BYTES); a larger Content-Length is refused unread. Bodies
  are read raw: the agent asks for `identity`, and a gzip/deflate body is inflated only
  under the same bound (any other encoding is refused). How many buffers exist at once
  is the engine's one budget (`engine.IN_FLIGHT_BYTES`). JSON answers (token, feed
  page, report) are capped too (`json_cap`).
- Time: every attempt runs under a deadline kept by `_Watchdog`, which shuts the
  connection's socket when the deadline passes, whatever phase the request is in
  (connect, TLS handshake, headers, body); the read loop also checks it between reads.
  A photo's deadline is `download_deadline()`; a JSON answer must keep up MIN_RATE
  after TIMEOUT seconds of grace.
- TLS: HO's certificate is verified against PHOTO_SYNC_EDGE_CA_BUNDLE when set (passed
  per request, so REQUESTS_CA_BUNDLE in the environment cannot override it); redirects
  are never followed, neither from the API nor from presigned URLs, and a presigned URL
  is fetched only from PHOTO_SYNC_EDGE_PRESIGNED_ORIGIN.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import random
import re
import socket
import ssl
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError as Urllib3Error

from photo_sync import __version__, protocol
from photo_sync.edge.settings import DEFAULT_MAX_PHOTO_BYTES, DEFAULT_MIN_RATE, origin_of
from photo_sync.errors import HOError, HOUnreachable
from photo_sync.protocol import Checksums

__all__ = ["BodyTooLarge", "DeadlineExceeded", "Download", "HOClient", "HOError",
           "HOUnreachable", "PhotoRejected", "PhotoUnavailable", "RateLimiter",
           "VerificationError", "download_deadline"]

log = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024
MAX_RETRY_AFTER = 120.0
MAX_THROTTLED = 60  # 429s with Retry-After honoured per request before counting as failures
# A JSON answer may be this large, plus JSON_ITEM_BYTES per photo a page may list (a feed
# item with a presigned URL is about 1.5 KB: the allowance is ten times that).
JSON_BASE_BYTES = 1024 * 1024
JSON_ITEM_BYTES = 16 * 1024
ERROR_BODY_BYTES = 64 * 1024  # enough of an error answer to show its code and detail
# The transport errors of reading a body raw (urllib3's own, not wrapped by requests).
BROKEN_BODY = (requests.ConnectionError, requests.Timeout,
               requests.exceptions.ChunkedEncodingError, Urllib3Error, OSError)


class PhotoUnavailable(Exception):
    """HO answers, but cannot deliver this one photo (its body keeps breaking off, or HO
    keeps answering 5xx for it): a failure of the photo, not of the run."""

    kind = protocol.FAILURE_UNAVAILABLE


class PhotoRejected(Exception):
    """This one photo's answer cannot be stored (bad bytes, too large, too slow): the photo
    fails alone, keeps whatever the store held, and the run goes on. The message is the
    reason an operator reads in the summary and HO reads in the status report."""

    kind = protocol.FAILURE_REJECTED


class VerificationError(PhotoRejected):
    """The bytes received do not match the checksums HO gave for them."""

    kind = protocol.FAILURE_CHECKSUM_MISMATCH


class BodyTooLarge(PhotoRejected):
    """The body ran past the photo's listed size or PHOTO_SYNC_EDGE_MAX_PHOTO_BYTES."""

    kind = protocol.FAILURE_TOO_LARGE


class DeadlineExceeded(PhotoRejected):
    """The photo arrived slower than its deadline allows (PHOTO_SYNC_EDGE_MIN_RATE)."""

    kind = protocol.FAILURE_DEADLINE


class RateLimiter:
    """A bandwidth cap shared by all download threads (bytes per second; 0 = none)."""

    def __init__(self, rate: int, burst_seconds: float = 0.25):
        self.rate = rate
        self.burst = burst_seconds
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def acquire(self, nbytes: int) -> None:
        """Wait until `nbytes` more fit under the cap."""
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now - self.burst)
            self._next = start + nbytes / self.rate
            wait = self._next - now - self.burst
        if wait > 0:
            time.sleep(wait)


@dataclass
class Download:
    """A verified photo body. `data` is the buffer it was read into (a bytearray, or a
    memoryview of it when the body was shorter than listed): psycopg stores either as
    bytea without a copy of ours."""

    data: bytes | bytearray | memoryview
    checksum: str
    checksum_sha256: str | None
    version: int
    content_type: str


def download_deadline(size: int, *, timeout: float, min_rate: int, bandwidth_limit: int = 0,
                      concurrency: int = 1) -> float:
    """Seconds one download attempt of a photo listed at `size` bytes may take:

        TIMEOUT + max(size / MIN_RATE, size * CONCURRENCY / BANDWIDTH_LIMIT)

    TIMEOUT covers connecting and HO's first byte; MIN_RATE is the slowest rate accepted;
    the second term (only with a bandwidth cap) is what the store's own cap needs when
    CONCURRENCY downloads share it, so a cap set low never fails photos by itself."""
    seconds = size / min_rate
    if bandwidth_limit > 0:
        seconds = max(seconds, size * concurrency / bandwidth_limit)
    return timeout + seconds


# Deadlines ------------------------------------------------------------------------------

_local = threading.local()


class _Watch:
    """One attempt's deadline and the connections it used (the watchdog cuts them)."""

    def __init__(self, seconds: float, first: float | None = None):
        self.started = time.monotonic()
        self.seconds = seconds
        # Until `answered()`: connect, TLS and the answer's headers within `first` seconds.
        self.deadline = self.started + min(seconds, first if first is not None else seconds)
        self.expired = False
        self.conns: list = []

    def answered(self) -> None:
        """The answer's headers are in: the body gets the rest of the full deadline."""
        if not self.expired:
            self.deadline = self.started + self.seconds

    def elapsed(self) -> float:
        """Seconds since the watched attempt started."""
        return time.monotonic() - self.started

    def past(self) -> bool:
        """True once the attempt's deadline has passed."""
        return self.expired or time.monotonic() >= self.deadline

    def attach(self, conn) -> None:
        """Remember the socket to shut when the deadline passes."""
        if conn not in self.conns:
            self.conns.append(conn)

    def cut(self) -> None:
        """Shut the watched socket, so a read blocked on it returns at once."""
        for conn in self.conns:
            sock = getattr(conn, "sock", None)
            if sock is None:
                continue
            try:
                # The plain socket's shutdown (also for an SSLSocket): it wakes a thread
                # blocked in recv or in the TLS handshake, without touching TLS state.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "_Watch":
        return self

    def __exit__(self, *exc) -> None:
        _WATCHDOG.release(self)


class _Watchdog:
    """Holds every running attempt's deadline; a daemon thread shuts the sockets of those
    past it. A socket read timeout alone never ends a body (or headers) that trickles in
    just faster than the timeout; this does."""

    TICK = 0.25  # how often an expired attempt's sockets are shut again (a TLS socket
    # replaces the plain one mid-handshake)

    def __init__(self):
        self._cond = threading.Condition()
        self._watches: set[_Watch] = set()
        self._thread: threading.Thread | None = None

    def start(self, seconds: float, first: float | None = None) -> _Watch:
        """Begin an attempt that may take `seconds` (its headers `first`); connections this
        thread uses until `release` are attached to it."""
        watch = _Watch(seconds, first)
        _local.watch = watch
        with self._cond:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadline-watchdog",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        return watch

    def release(self, watch: _Watch) -> None:
        """The attempt is over (done, failed or cut)."""
        if getattr(_local, "watch", None) is watch:
            _local.watch = None
        with self._cond:
            self._watches.discard(watch)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                waits = []
                for watch in self._watches:
                    if now >= watch.deadline:
                        watch.expired = True
                        watch.cut()
                        waits.append(self.TICK)
                    else:
                        waits.append(watch.deadline - now)
                self._cond.wait(min(waits) if waits else None)


_WATCHDOG = _Watchdog()


def _watched(base: type) -> type:
    """`base` (a urllib3 connection class) attaching itself to the calling thread's
    running attempt whenever it connects or sends a request."""

    class Watched(base):
        def connect(self):
            watch = getattr(_local, "watch", None)
            if watch is not None:
                watch.attach(self)
            return super().connect()

        def request(self, *args, **kwargs):
            watch = getattr(_local, "watch", None)
            if watch is not None:
                watch.attach(self)
            return super().request(*args, **kwargs)

    Watched.__name__ = Watched.__qualname__ = f"Watched{base.__name__}"
    return Watched


_WATCHED_CLASSES: dict[type, type] = {}
_WATCHED_LOCK = threading.Lock()


class _WatchedAdapter(HTTPAdapter):
    """An HTTPAdapter whose pools (direct or through a proxy) make watched connections."""

    def get_connection_with_tls_context(self, *args, **kwargs):
        """The pooled connection, with the attempt's watch attached to its socket."""
        pool = super().get_connection_with_tls_context(*args, **kwargs)
        base = pool.ConnectionCls
        if not getattr(base, "_photo_sync_watched", False):
            with _WATCHED_LOCK:
                if base not in _WATCHED_CLASSES:
                    cls = _watched(base)
                    cls._photo_sync_watched = True
                    _WATCHED_CLASSES[base] = cls
            pool.ConnectionCls = _WATCHED_CLASSES[base]
        return pool


# Presigned GETs -------------------------------------------------------------------------

# Seconds to open a connection, on both clients; reads get PHOTO_SYNC_EDGE_TIMEOUT.
CONNECT_TIMEOUT = 10.0


class _LeanResponse:
    """An http.client answer in the shape `_pump` and `_read_photo` read (`status_code`,
    `headers`, `raw.read1`). A body that ends before its Content-Length raises
    ConnectionError (one of BROKEN_BODY), as urllib3 does."""

    def __init__(self, response: http.client.HTTPResponse):
        self._response = response
        self.status_code = response.status
        self.headers = response.headers
        self.raw = self

    def read1(self, amount: int, decode_content: bool = False) -> bytes:
        """Whatever one socket read brings, up to `amount` bytes (never decoded)."""
        response = self._response
        if response.isclosed():
            return b""
        data = response.read1(amount)
        if not data and response.length:
            raise ConnectionError(f"body ended {response.length} bytes short")
        if response.length == 0:
            response.close()  # the body is complete: the connection may carry the next GET
        return data

    @property
    def complete(self) -> bool:
        """True when the whole body was read (the connection can be reused)."""
        return self._response.isclosed()


class _LeanConnections:
    """Keep-alive http.client connections to the presigned origin, one per download thread.

    A presigned GET needs none of what requests adds per request (cookies, netrc and proxy
    lookups, CA bundle path checks, header merging): on this project's bench 300 GETs of
    200 KB cost 0.82 s of CPU through a requests Session and 0.2 s through http.client
    (bench/profiles/README.md). Used only when no proxy is configured for the origin."""

    def __init__(self, origin: tuple[str, str, int], timeout: float, verify: str | bool,
                 user_agent: str):
        self.scheme, self.host, self.port = origin
        self.timeout = timeout
        self.headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
        self._context = None
        if self.scheme == "https":
            import requests.certs
            cafile = verify if isinstance(verify, str) else requests.certs.where()
            self._context = ssl.create_default_context(cafile=cafile)
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _new(self) -> http.client.HTTPConnection:
        # Connected here with the short connect timeout (an S3 the store cannot reach is
        # left for the API in 10 s, as on the requests path), then reads get the full one.
        connect = min(CONNECT_TIMEOUT, self.timeout)
        if self._context is not None:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=connect,
                                               context=self._context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=connect)
        with self._lock:
            self._all.append(conn)
        conn.connect()
        conn.sock.settimeout(self.timeout)
        return conn

    def get(self, url: str, watch: "_Watch") -> tuple[http.client.HTTPConnection, _LeanResponse]:
        """GET `url` on this thread's connection (a new one when a kept one was closed by the
        server meanwhile); the answer's headers are read."""
        parts = urllib.parse.urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn = getattr(self._local, "conn", None)
        reused = conn is not None
        for _ in range(2):
            if conn is None:
                conn = self._local.conn = self._new()
            watch.attach(conn)
            try:
                conn.request("GET", target, headers=self.headers)
                return conn, _LeanResponse(conn.getresponse())
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.drop(conn)
                if not reused or watch.past():
                    raise
                conn, reused = None, False  # a kept connection the server had closed
        raise AssertionError("unreachable")

    def drop(self, conn: http.client.HTTPConnection) -> None:
        """Close a connection whose answer was not read to its end."""
        conn.close()
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


# Bodies ---------------------------------------------------------------------------------

class _Cut(Exception):
    """Reading a body stopped on purpose: `kind` is large | late | encoding."""

    def __init__(self, kind: str, received: int, detail: str = ""):
        super().__init__(kind)
        self.kind = kind
        self.received = received
        self.detail = detail


def _encoding(response: requests.Response) -> str:
    return (response.headers.get("Content-Encoding") or "identity").strip().lower()


def _content_length(response: requests.Response) -> int | None:
    try:
        value = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def _pump(response: requests.Response, watch: _Watch, limit: int, write, *,
          limiter: RateLimiter | None = None, grace: float | None = None,
          min_rate: int = DEFAULT_MIN_RATE) -> int:
    """Feed a body to `write` chunk by chunk, raw off the socket, and return its length.

    Raises _Cut("large") as soon as more than `limit` bytes arrive (after inflating a
    gzip/deflate body, chunk by chunk under the same bound: a gzip bomb never gets past
    `limit`), _Cut("encoding") for any other Content-Encoding, and _Cut("late") once the
    attempt's deadline passed or, with `grace`, once the body falls behind `min_rate`
    after `grace` seconds. Transport errors (BROKEN_BODY) pass through."""
    encoding = _encoding(response)
    if encoding == "identity":
        inflater = None
    elif encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    elif encoding == "deflate":
        inflater = zlib.decompressobj()
    else:
        raise _Cut("encoding", 0, encoding)
    received = 0

    def emit(chunk: bytes) -> None:
        nonlocal received
        if received + len(chunk) > limit:
            raise _Cut("large", received + len(chunk))
        write(chunk)
        received += len(chunk)

    raw = response.raw
    while True:
        if watch.past() or (grace is not None and watch.elapsed() > grace + received / min_rate):
            raise _Cut("late", received)
        try:
            # read1: whatever one socket read brings (up to a chunk), so the checks above
            # run while a trickle arrives; decode_content=False: never urllib3's unbounded
            # inflation.
            data = raw.read1(CHUNK_SIZE, decode_content=False)
        except BROKEN_BODY:
            if watch.past():
                raise _Cut("late", received) from None
            raise
        if not data:
            break
        if limiter is not None:
            limiter.acquire(len(data))
        if inflater is None:
            emit(data)
            continue
        try:
            while True:
                step = min(limit - received + 1, CHUNK_SIZE)  # never 0: 0 means unlimited
                out = inflater.decompress(data, step)
                data = inflater.unconsumed_tail
                emit(out)
                if not data and len(out) < step:
                    break
        except zlib.error as exc:
            raise _Cut("encoding", received, f"{encoding} data is damaged ({exc})") from None
        if inflater.eof:
            break
    return received


def _peek(response: requests.Response, watch: _Watch) -> bytes:
    """Up to ERROR_BODY_BYTES of an answer we only show to an operator."""
    body = bytearray()
    try:
        _pump(response, watch, ERROR_BODY_BYTES, body.extend)
    except (_Cut, *BROKEN_BODY):
        pass
    return bytes(body[:ERROR_BODY_BYTES])


def _error_of(response: requests.Response, watch: _Watch) -> HOError:
    """HOError from an answer that is not the one asked for (its body read bounded)."""
    status = response.status_code
    if 300 <= status < 400:
        return HOError(status, "redirect", f"HO redirected to {response.headers.get('Location')!r}"
                       "; the agent follows no redirects: set PHOTO_SYNC_EDGE_HO_URL to the "
                       "address HO answers at")
    body = _peek(response, watch)
    try:
        parsed = json.loads(body)
        code, detail = str(parsed.get("error", "error")), str(parsed.get("detail", ""))
    except (ValueError, AttributeError):
        code, detail = "error", body[:200].decode("utf-8", "replace")
    return HOError(status, code[:100], detail[:500])


def _retry_after(response: requests.Response, default: float) -> float:
    value = response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value) if value else None
        except (TypeError, ValueError):
            parsed = None
        seconds = (parsed.timestamp() - time.time()) if parsed else default
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


def _verify(sums: Checksums, md5: str, sha256: str | None, source: str) -> None:
    if not md5:
        raise VerificationError(f"{source} gave no MD5 checksum")
    if sums.md5 != md5:
        raise VerificationError(f"MD5 mismatch: got {sums.md5}, {source} says {md5} "
                                f"({sums.size} bytes received)")
    if sha256 and sums.sha256 != sha256:
        raise VerificationError(f"SHA-256 mismatch: got {sums.sha256[:16]}..., "
                                f"{source} says {sha256[:16]}...")


_TLS_REASON = re.compile(r"certificate verify failed: ([^'\"(]+)|(hostname [^'\"(]+)")


def _tls_reason(exc: Exception) -> str | None:
    """What failed in verifying a peer's certificate, or None when the TLS error is not
    about the certificate (a connection reset mid-handshake, ...)."""
    match = _TLS_REASON.search(str(exc))
    if match is None:
        return None
    if match.group(1):
        return f"certificate verify failed: {match.group(1).strip()}"
    return match.group(2).strip()


class HOClient:
    """The store's side of the HO sync API: token, feed pages, verified downloads, reports."""

    @classmethod
    def from_settings(cls, settings, *, pool_size: int | None = None) -> "HOClient":
        """The client an edge run uses, configured from its `EdgeSettings`."""
        return cls(settings.ho_url, settings.store_id, settings.store_secret,
                   timeout=settings.timeout, retries=settings.retries,
                   pool_size=pool_size or settings.concurrency + 4,
                   limiter=RateLimiter(settings.bandwidth_limit),
                   concurrency=settings.concurrency,
                   max_photo_bytes=settings.max_photo_bytes, min_rate=settings.min_rate,
                   ca_bundle=settings.ca_bundle, presigned_origin=settings.presigned_origin)

    def __init__(self, base_url: str, store_id: str, secret: str, *, timeout: float = 60.0,
                 retries: int = 5, backoff: float = 0.5, max_backoff: float = 15.0,
                 pool_size: int = 16, limiter: RateLimiter | None = None, concurrency: int = 1,
                 max_photo_bytes: int = DEFAULT_MAX_PHOTO_BYTES,
                 min_rate: int = DEFAULT_MIN_RATE, ca_bundle: str = "",
                 presigned_origin: str = ""):
        self.base_url = base_url.rstrip("/")
        self.api = self.base_url + protocol.API_PREFIX
        self.store_id = store_id
        self._secret = secret
        self.timeout_s = timeout
        # (connect, read): an origin that does not answer a SYN is given up in 10 s.
        self.timeout = (min(CONNECT_TIMEOUT, timeout), timeout)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.limiter = limiter or RateLimiter(0)
        self.concurrency = concurrency
        self.max_photo_bytes = max_photo_bytes
        self.min_rate = min_rate
        # Passed with every request: a session-wide verify loses to REQUESTS_CA_BUNDLE.
        self.verify: str | bool = ca_bundle or True
        self.presigned_origin = origin_of(presigned_origin) if presigned_origin else None
        self.session = requests.Session()
        adapter = _WatchedAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = f"photo-sync-edge/{__version__}"
        # Bodies are read raw; an encoded one is inflated only under the photo's bound.
        self.session.headers["Accept-Encoding"] = "identity"
        self._token: str | None = None
        self._token_lock = threading.Lock()
        self._lean: _LeanConnections | None = None
        if self.presigned_origin is not None:
            scheme, host, port = self.presigned_origin
            if not requests.utils.get_environ_proxies(f"{scheme}://{host}:{port}/"):
                self._lean = _LeanConnections(self.presigned_origin, timeout, self.verify,
                                              self.session.headers["User-Agent"])

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()
        if self._lean is not None:
            self._lean.close()

    # Auth -------------------------------------------------------------------------------

    def authenticate(self) -> None:
        """Get a fresh token; HOUnreachable when HO refuses the credentials."""
        status, body = self._call_json("POST", "/auth/token/", "the token answer",
                                       JSON_BASE_BYTES, authenticated=False,
                                       json={"store_id": self.store_id, "secret": self._secret})
        if status == 401:
            raise HOUnreachable(
                f"HO at {self.base_url} refused the credentials of store {self.store_id}: "
                "check PHOTO_SYNC_EDGE_STORE_ID and PHOTO_SYNC_EDGE_STORE_SECRET "
                "(is the store registered and active at HO?)")
        if status != 200:
            raise HOUnreachable(f"HO at {self.base_url} did not issue a token: {body}")
        try:
            self._token = str(body["access"])
        except (TypeError, KeyError):
            raise HOUnreachable(f"HO at {self.base_url} answered the token request without "
                                "an access token: is PHOTO_SYNC_EDGE_HO_URL the HO sync API?"
                                ) from None

    def _auth_header(self) -> dict:
        with self._token_lock:
            if self._token is None:
                self.authenticate()
            return {"Authorization": f"Bearer {self._token}"}

    def _renew(self, stale: dict) -> None:
        with self._token_lock:
            if stale.get("Authorization") == f"Bearer {self._token}":
                self.authenticate()

    # Transport --------------------------------------------------------------------------

    def _sleep_backoff(self, attempt: int) -> None:
        delay = min(self.max_backoff, self.backoff * 2 ** attempt)
        time.sleep(delay * (0.5 + random.random() / 2))

    def _call(self, method: str, path: str, *, seconds: float, read,
              authenticated: bool = True, **kwargs):
        """One API call with the retry policy (connection errors, 5xx and 429 are retried;
        a 401 renews the token once). Each attempt runs under its own deadline: its headers
        within TIMEOUT (else it counts as a timeout, and is retried), all of it within
        `seconds`; the answer that is not retried goes to `read(response, watch)` within
        that deadline, and its result is returned."""
        url = self.api + path
        renewed = False
        attempt = 0
        throttled = 0
        extra_headers = kwargs.pop("headers", None) or {}
        while True:
            headers = dict(extra_headers)
            if authenticated:
                auth = self._auth_header()
                headers.update(auth)
            with _WATCHDOG.start(seconds, self.timeout_s) as watch:
                try:
                    response = self.session.request(
                        method, url, headers=headers, stream=True, timeout=self.timeout,
                        verify=self.verify, allow_redirects=False, **kwargs)
                    if watch.expired:
                        # Cut mid-headers: http.client takes the EOF for their end.
                        response.close()
                        raise requests.Timeout("no complete headers within the deadline")
                    watch.answered()
                except (requests.ConnectionError, requests.Timeout) as exc:
                    slow = watch.past() or isinstance(exc, requests.Timeout)
                    tls = (_tls_reason(exc) if isinstance(exc, requests.exceptions.SSLError)
                           and not slow else None)
                    if tls:
                        # Not retried: a certificate does not fix itself between tries.
                        raise HOUnreachable(
                            f"cannot reach HO API at {self.base_url} over TLS "
                            f"({tls}): set PHOTO_SYNC_EDGE_CA_BUNDLE to the PEM "
                            "file of the CA that signed HO's certificate, and check that "
                            "PHOTO_SYNC_EDGE_HO_URL names the host the certificate is for"
                            ) from None
                    if attempt >= self.retries:
                        reason = (f"no answer within PHOTO_SYNC_EDGE_TIMEOUT={self.timeout_s:g} s"
                                  if slow else type(exc).__name__)
                        raise HOUnreachable(f"cannot reach HO API at {self.base_url} "
                                            f"({reason}) after {attempt + 1} tries: "
                                            "check PHOTO_SYNC_EDGE_HO_URL and the WAN link"
                                            ) from None
                    self._sleep_backoff(attempt)
                    attempt += 1
                    continue
                try:
                    status = response.status_code
                    retried = (status == 401 and authenticated and not renewed) or (
                        status == 429 or status >= 500)
                    if not retried:
                        if status == 401 and authenticated:
                            raise HOUnreachable(f"HO at {self.base_url} refuses this store's "
                                                "token: is the store disabled or its secret "
                                                "rotated?")
                        return read(response, watch)
                    error = (_error_of(response, watch)
                             if status != 401 and attempt >= self.retries else None)
                finally:
                    response.close()
            if status == 401:
                renewed = True
                self._renew(auth)
                continue
            if status == 429 and "Retry-After" in response.headers and throttled < MAX_THROTTLED:
                # HO asked us to slow down, not failed: its waits do not use up the retries.
                throttled += 1
                time.sleep(_retry_after(response, self.backoff))
                continue
            if attempt >= self.retries:
                raise HOUnreachable(f"HO API at {self.base_url} keeps answering {status} "
                                    f"({error.code}) after {attempt + 1} tries", status)
            if status in (429, 503) and "Retry-After" in response.headers:
                time.sleep(_retry_after(response, self.backoff * 2 ** attempt))
            else:
                self._sleep_backoff(attempt)
            attempt += 1

    def _call_json(self, method: str, path: str, what: str, cap: int, **kwargs):
        """(status, parsed JSON) of a call answered 200, else (status, HOError). The body may
        be `cap` bytes at most and must keep up MIN_RATE after TIMEOUT seconds."""

        def read(response, watch):
            if response.status_code != 200:
                return response.status_code, _error_of(response, watch)
            length = _content_length(response)
            if length is not None and length > cap and _encoding(response) == "identity":
                raise self._json_too_large(what, cap, length)
            body = bytearray()
            try:
                _pump(response, watch, cap, body.extend, grace=self.timeout_s,
                      min_rate=self.min_rate)
            except _Cut as cut:
                if cut.kind == "late":
                    raise late(watch, cut.received) from None
                if cut.kind == "large":
                    raise self._json_too_large(what, cap, None) from None
                why = cut.detail or (f"Content-Encoding {_encoding(response)!r}; the agent "
                                     "asks for identity")
                raise HOUnreachable(f"HO API at {self.base_url} sent {what} the agent cannot "
                                    f"read ({why})") from None
            try:
                return 200, json.loads(body)
            except ValueError:
                raise HOUnreachable(f"HO API at {self.base_url} sent {what} that is not JSON: "
                                    "is PHOTO_SYNC_EDGE_HO_URL the HO sync API?") from None

        def late(watch, received):
            return HOUnreachable(
                f"HO API at {self.base_url} sent {what} too slowly ({received} bytes in "
                f"{watch.elapsed():.0f} s; an answer's headers must arrive within "
                f"PHOTO_SYNC_EDGE_TIMEOUT={self.timeout_s:g} s and its body keep up "
                f"PHOTO_SYNC_EDGE_MIN_RATE={self.min_rate} bytes/s): check the WAN link")

        for attempt in range(self.retries + 1):
            try:
                return self._call(method, path, seconds=self.timeout_s + cap / self.min_rate,
                                  read=read, **kwargs)
            except BROKEN_BODY as exc:
                # The answer broke off after its headers: ask again.
                if attempt >= self.retries:
                    raise HOUnreachable(f"HO API at {self.base_url} keeps breaking off {what} "
                                        f"({type(exc).__name__}) after {attempt + 1} tries: "
                                        "check the WAN link") from None
                self._sleep_backoff(attempt)
        raise AssertionError("unreachable")

    def _json_too_large(self, what: str, cap: int, length: int | None) -> HOUnreachable:
        size = f"{length} bytes, more than" if length is not None else "more than"
        done = "not read" if length is not None else "cut off"
        return HOUnreachable(f"HO API at {self.base_url} sent {what} of {size} the {cap} "
                             f"bytes the agent reads for it: {done} (is PHOTO_SYNC_EDGE_HO_URL "
                             "the HO sync API?)")

    # API --------------------------------------------------------------------------------

    def list_page(self, *, cursor: str | None = None, limit: int = 500, offset: int = 0,
                  since: str | None = None) -> dict:
        """One page of the change feed, parsed (its size bounded by `limit`)."""
        params = {"store_id": self.store_id, "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        else:
            params["offset"] = offset
            if since:
                params["since"] = since
        cap = JSON_BASE_BYTES + limit * JSON_ITEM_BYTES
        status, body = self._call_json("GET", "/sync/product-photos/", "a photo list page",
                                       cap, params=params)
        if status != 200:
            raise HOUnreachable(f"HO refused the photo list: {body}")
        return body  # its envelope and items are checked in one place: protocol.parse_page

    def photo_limit(self, photo: dict) -> int:
        """The most bytes accepted for this photo: its listed size, capped by
        PHOTO_SYNC_EDGE_MAX_PHOTO_BYTES (BodyTooLarge when the listing is above the cap)."""
        size = photo.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return self.max_photo_bytes
        if size > self.max_photo_bytes:
            raise BodyTooLarge(
                f"body too large: photo {photo['id']} is listed at {size} bytes, more than "
                f"PHOTO_SYNC_EDGE_MAX_PHOTO_BYTES={self.max_photo_bytes}: not downloaded "
                "(raise the setting if photos this large are intended)")
        return size

    def deadline(self, photo: dict) -> float:
        """Seconds a download attempt of this photo may take (see `download_deadline`); its
        headers must be in within TIMEOUT."""
        size = photo.get("size")
        size = size if isinstance(size, int) and size > 0 else 0
        return download_deadline(size, timeout=self.timeout_s, min_rate=self.min_rate,
                                 bandwidth_limit=self.limiter.rate,
                                 concurrency=self.concurrency)

    def _read_photo(self, response: requests.Response, watch: _Watch, photo: dict,
                    limit: int, source: str):
        """The body of a photo in one buffer allocated up front, and its checksums."""
        length = _content_length(response)
        identity = _encoding(response) == "identity"
        if length is not None and identity and length > limit:
            raise self._too_large(photo, limit, source, announced=length)
        # With Content-Length the body cannot run past it (http.client stops there).
        buffer = bytearray(length if length is not None and identity else limit)
        view = memoryview(buffer)
        sums = Checksums()
        position = 0

        def write(chunk: bytes) -> None:
            nonlocal position
            view[position:position + len(chunk)] = chunk
            position += len(chunk)
            sums.update(chunk)

        try:
            _pump(response, watch, len(buffer), write, limiter=self.limiter)
        except _Cut as cut:
            if cut.kind == "large":
                raise self._too_large(photo, limit, source, received=cut.received) from None
            if cut.kind == "late":
                raise self._late(photo, watch, cut.received, source) from None
            why = cut.detail or "not decoded by the agent, which asks for identity"
            raise PhotoRejected(f"photo {photo['id']}: {source} sent Content-Encoding "
                                f"{_encoding(response)!r} ({why}): not stored") from None
        data = buffer if position == len(buffer) else view[:position]
        return data, sums

    def _too_large(self, photo: dict, limit: int, source: str, *, announced: int | None = None,
                   received: int | None = None) -> BodyTooLarge:
        which = (f"PHOTO_SYNC_EDGE_MAX_PHOTO_BYTES={self.max_photo_bytes}"
                 if limit == self.max_photo_bytes else f"its listed size {photo.get('size')}")
        if announced is not None:
            what = f"announced {announced} bytes (Content-Length) for photo {photo['id']}"
            done = "refused unread"
        else:
            what = f"sent more than {limit} bytes for photo {photo['id']}"
            done = f"cut off at {received} bytes"
        return BodyTooLarge(f"body too large: {source} {what}, above the limit of {limit} "
                            f"bytes ({which}): {done}")

    def _late(self, photo: dict, watch: _Watch, received: int, source: str) -> DeadlineExceeded:
        size = photo.get("size")
        return DeadlineExceeded(
            f"deadline exceeded: photo {photo['id']} from {source} took longer than its "
            f"{watch.seconds:.0f} s (PHOTO_SYNC_EDGE_TIMEOUT={self.timeout_s:g} s + {size} bytes "
            f"at PHOTO_SYNC_EDGE_MIN_RATE={self.min_rate} bytes/s, or at the bandwidth cap); "
            f"{received} of {size} bytes had arrived: check the link, or lower "
            "PHOTO_SYNC_EDGE_MIN_RATE if it is this slow")

    def download(self, photo: dict) -> Download:
        """The verified bytes of a listed photo (`photo` is its feed item). HOError for 4xx;
        PhotoRejected (VerificationError, BodyTooLarge, DeadlineExceeded) when its answer
        cannot be stored; PhotoUnavailable when HO cannot deliver it."""
        photo_id = str(photo["id"])
        return self._download(photo, photo_id, self.photo_limit(photo))

    def _download(self, photo: dict, photo_id: str, limit: int) -> Download:
        def read(response, watch):
            if response.status_code != 200:
                raise _error_of(response, watch)
            data, sums = self._read_photo(response, watch, photo, limit, "HO")
            return response.headers, data, sums

        for attempt in range(self.retries + 1):
            try:
                headers, data, sums = self._call(
                    "GET", f"/sync/product-photos/{photo_id}/download/", read=read,
                    seconds=self.deadline(photo), params={"store_id": self.store_id})
            except HOUnreachable as exc:
                if exc.status is not None and exc.status >= 500:
                    raise PhotoUnavailable(str(exc)) from None
                raise
            except BROKEN_BODY as exc:
                # The body broke off: try the whole photo again.
                if attempt >= self.retries:
                    raise PhotoUnavailable(f"download of photo {photo_id} from HO API at "
                                           f"{self.base_url} keeps breaking off "
                                           f"({type(exc).__name__})") from None
                self._sleep_backoff(attempt)
                continue
            expected_md5 = headers.get(protocol.HEADER_CHECKSUM, "").lower()
            expected_sha = headers.get(protocol.HEADER_CHECKSUM_SHA256, "").lower() or None
            if not expected_md5:
                raise VerificationError("HO sent no X-Checksum header")
            _verify(sums, expected_md5, expected_sha, "HO")
            try:
                version = int(headers.get(protocol.HEADER_VERSION, ""))
            except ValueError:
                raise VerificationError("HO sent no valid X-Version header") from None
            return Download(data, sums.md5, expected_sha, version,
                            headers.get("Content-Type", "application/octet-stream"))
        raise AssertionError("unreachable")

    def presigned_allowed(self, url: str) -> str | None:
        """None when `url` may be fetched, else why not (the origin rule)."""
        if self.presigned_origin is None:
            return "PHOTO_SYNC_EDGE_PRESIGNED_ORIGIN is not set"
        try:
            origin = origin_of(url)
        except ValueError:
            return "it is not an http(s) URL"
        if origin != self.presigned_origin:
            return (f"it points at {origin[0]}://{origin[1]}:{origin[2]}, not at "
                    "PHOTO_SYNC_EDGE_PRESIGNED_ORIGIN")
        return None

    def fetch_presigned(self, url: str, photo: dict) -> Download:
        """The bytes of a photo straight from S3 (a URL HO presigned), verified against the
        checksums of the listing. Only from PHOTO_SYNC_EDGE_PRESIGNED_ORIGIN, no redirects,
        one try: PhotoUnavailable means "use the API"; PhotoRejected fails the photo."""
        refused = self.presigned_allowed(url)
        if refused:
            raise PhotoUnavailable(f"presigned URL not fetched: {refused}")
        limit = self.photo_limit(photo)
        response = conn = None
        with _WATCHDOG.start(self.deadline(photo), self.timeout_s) as watch:
            try:
                if self._lean is not None:
                    conn, response = self._lean.get(url, watch)
                else:
                    response = self.session.get(url, stream=True, timeout=self.timeout,
                                                verify=self.verify, allow_redirects=False)
                if watch.expired:
                    raise PhotoUnavailable("presigned GET: no complete headers within "
                                           f"PHOTO_SYNC_EDGE_TIMEOUT={self.timeout_s:g} s")
                watch.answered()
                if 300 <= response.status_code < 400:
                    raise PhotoUnavailable(f"presigned GET answered {response.status_code} "
                                           "(a redirect: not followed)")
                if response.status_code != 200:
                    raise PhotoUnavailable(f"presigned GET answered {response.status_code}")
                data, sums = self._read_photo(response, watch, photo, limit, "S3")
            except (requests.exceptions.SSLError, ssl.SSLError) as exc:
                raise PhotoUnavailable(f"presigned GET failed "
                                       f"({_tls_reason(exc) or 'TLS error'})") from None
            except (*BROKEN_BODY, http.client.HTTPException) as exc:
                # The body's own breaks end in _read_photo.
                if response is None and watch.expired:
                    raise PhotoUnavailable("presigned GET: no complete headers within "
                                           f"PHOTO_SYNC_EDGE_TIMEOUT={self.timeout_s:g} s"
                                           ) from None
                raise PhotoUnavailable(f"presigned GET failed ({type(exc).__name__})"
                                       ) from None
            finally:
                if conn is not None:
                    if response is None or not response.complete:
                        self._lean.drop(conn)
                elif response is not None:
                    response.close()
        _verify(sums, (photo.get("checksum") or "").lower(),
                (photo.get("checksum_sha256") or "").lower() or None, "the HO catalog")
        return Download(data, sums.md5, photo.get("checksum_sha256"),
                        int(photo["version"]), photo.get("content_type")
                        or response.headers.get("Content-Type", "application/octet-stream"))

    def report(self, batch: list[dict]) -> int:
        """Deliver one batch of per-photo statuses; the count HO recorded."""
        status, body = self._call_json("POST", "/sync/product-photos/status/",
                                       "the report answer", JSON_BASE_BYTES,
                                       json={"store_id": self.store_id, "sync_batch": batch})
        if status != 200:
            raise body
        try:
            return int(body.get("count", len(batch)))
        except (AttributeError, TypeError, ValueError):
            return len(batch)
