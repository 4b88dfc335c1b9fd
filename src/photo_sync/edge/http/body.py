"""Reading an answer's body under a size bound and a deadline.

The body comes raw off the socket (`Response.read1`), so every check runs while it
arrives: a body is cut (`Cut("large")`) as soon as it runs past its bound, a gzip/deflate
body is inflated chunk by chunk under the same bound (a gzip bomb never gets past it), any
other Content-Encoding is refused (`Cut("encoding")`), and the body is cut
(`Cut("late")`) once its attempt's deadline passed or, for a JSON answer, once it falls
behind a minimum rate. A photo's body goes into one buffer allocated before the first
byte and is checksummed as it is written (`read_photo`).
"""

from __future__ import annotations

import threading
import time
import zlib

from photo_sync.edge.http.errors import BodyBroken
from photo_sync.edge.http.watchdog import Watch
from photo_sync.protocol import Checksums

__all__ = ["CHUNK_SIZE", "ERROR_BODY_BYTES", "Cut", "RateLimiter", "content_length",
           "encoding", "peek", "pump", "read_photo"]

CHUNK_SIZE = 256 * 1024
ERROR_BODY_BYTES = 64 * 1024  # enough of an error answer to show its code and detail


class Cut(Exception):
    """Reading a body stopped on purpose: `kind` is large | late | encoding. `announced`:
    the Content-Length of a body refused unread."""

    def __init__(self, kind: str, received: int, detail: str = "", *,
                 announced: int | None = None):
        super().__init__(kind)
        self.kind = kind
        self.received = received
        self.detail = detail
        self.announced = announced


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


def encoding(response) -> str:
    """The answer's Content-Encoding, lower case ("identity" when none)."""
    return (response.headers.get("Content-Encoding") or "identity").strip().lower()


def content_length(response) -> int | None:
    """The answer's Content-Length, or None when absent or not a number."""
    try:
        value = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def pump(response, watch: Watch, limit: int, write, *, limiter: RateLimiter | None = None,
         grace: float | None = None, min_rate: int = 1) -> int:
    """Feed a body to `write` chunk by chunk, raw off the socket, and return its length.

    Raises Cut("large") as soon as more than `limit` bytes arrive (after inflating),
    Cut("encoding") for an encoding other than gzip/deflate or damaged data, and
    Cut("late") once the attempt's deadline passed or, with `grace`, once the body falls
    behind `min_rate` after `grace` seconds. BodyBroken passes through."""
    coding = encoding(response)
    if coding == "identity":
        inflater = None
    elif coding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    elif coding == "deflate":
        inflater = zlib.decompressobj()
    else:
        raise Cut("encoding", 0, coding)
    received = 0

    def emit(chunk: bytes) -> None:
        nonlocal received
        if received + len(chunk) > limit:
            raise Cut("large", received + len(chunk))
        write(chunk)
        received += len(chunk)

    while True:
        if watch.past() or (grace is not None and watch.elapsed() > grace + received / min_rate):
            raise Cut("late", received)
        try:
            # read1: whatever one socket read brings (up to a chunk), so the checks above
            # run while a trickle arrives.
            data = response.read1(CHUNK_SIZE)
        except BodyBroken:
            if watch.past():
                raise Cut("late", received) from None
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
            raise Cut("encoding", received, f"{coding} data is damaged ({exc})") from None
        if inflater.eof:
            break
    return received


def read_photo(response, watch: Watch, limit: int, limiter: RateLimiter | None = None):
    """(data, checksums) of a body of at most `limit` bytes, read into one buffer allocated
    up front (its Content-Length when that is given, else `limit`). Cut("large") before
    the first byte when the Content-Length is above `limit`; else as `pump`."""
    length = content_length(response)
    identity = encoding(response) == "identity"
    if length is not None and identity and length > limit:
        raise Cut("large", 0, announced=length)
    # With Content-Length the body cannot run past it (the reader stops there).
    buffer = bytearray(length if length is not None and identity else limit)
    view = memoryview(buffer)
    sums = Checksums()
    position = 0

    def write(chunk: bytes) -> None:
        nonlocal position
        view[position:position + len(chunk)] = chunk
        position += len(chunk)
        sums.update(chunk)

    pump(response, watch, len(buffer), write, limiter=limiter)
    data = buffer if position == len(buffer) else view[:position]
    return data, sums


def peek(response, watch: Watch) -> bytes:
    """Up to ERROR_BODY_BYTES of an answer only shown to an operator."""
    body = bytearray()
    try:
        pump(response, watch, ERROR_BODY_BYTES, body.extend)
    except (Cut, BodyBroken):
        pass
    return bytes(body[:ERROR_BODY_BYTES])
