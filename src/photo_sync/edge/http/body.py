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

import datetime as dt
import logging
import threading
import time
import zlib

from photo_sync.edge.bandwidth import Timetable, Window, format_rate
from photo_sync.edge.http.errors import BodyBroken
from photo_sync.edge.http.watchdog import Watch
from photo_sync.protocol import Checksums

__all__ = ["CHUNK_SIZE", "ERROR_BODY_BYTES", "Cut", "RateLimiter", "content_length",
           "encoding", "peek", "pump", "read_photo"]

CHUNK_SIZE = 256 * 1024
ERROR_BODY_BYTES = 64 * 1024  # enough of an error answer to show its code and detail

log = logging.getLogger(__name__)


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
    """A bandwidth cap shared by all download threads: a rate in bytes per second (0 =
    none) or a `bandwidth.Timetable` of rates by time of day.

    The timetable is asked for the current window at most once a second (`clock`
    seconds), so a long download follows a window change within a second, or within
    one chunk's reading when the chunk ends sooner; a sleep under the old window is cut
    short when the window changes, and the new window starts without the old one's debt.
    `clock`, `sleep` and `local_now` (the store's local time) are injectable for tests."""

    CHECK_EVERY = 1.0  # seconds between two looks at the timetable

    def __init__(self, rate: int | Timetable, burst_seconds: float = 0.25, *,
                 clock=time.monotonic, sleep=time.sleep, local_now=None):
        self.timetable = rate if isinstance(rate, Timetable) else Timetable.constant(rate)
        self.burst = burst_seconds
        self._clock = clock
        self._sleep = sleep
        self._local_now = local_now or (lambda: dt.datetime.now().astimezone())
        self._lock = threading.Lock()
        self._next = clock()
        self._window: Window | None = None
        self._checked = float("-inf")
        self._generation = 0
        self._uncapped = self.timetable.is_constant and self.timetable.windows[0].rate <= 0

    @property
    def rate(self) -> int:
        """The cap now, in bytes per second (0 = none)."""
        with self._lock:
            return self._current(self._clock()).rate

    def _current(self, now: float) -> Window:
        """The window in force (caller holds the lock), looked up again once a second."""
        if self._window is not None and now - self._checked < self.CHECK_EVERY:
            return self._window
        self._checked = now
        window = (self.timetable.windows[0] if self.timetable.is_constant
                  else self.timetable.window_at(self._local_now()))
        if window != self._window:
            if not self.timetable.is_constant:
                log.info("bandwidth cap %s from %s (timetable %s)", format_rate(window.rate),
                         str(window).partition(",")[0], self.timetable)
            self._window = window
            self._next = now
            self._generation += 1
        return window

    def acquire(self, nbytes: int) -> None:
        """Wait until `nbytes` more fit under the cap."""
        if self._uncapped:
            return
        with self._lock:
            now = self._clock()
            rate = self._current(now).rate
            if rate <= 0:
                return
            start = max(self._next, now - self.burst)
            self._next = start + nbytes / rate
            until = self._next - self.burst
            generation = self._generation
        while True:
            wait = until - self._clock()
            if wait <= 0:
                return
            # In slices, so a window that changes meanwhile ends the wait.
            self._sleep(min(wait, self.CHECK_EVERY))
            with self._lock:
                self._current(self._clock())
                if self._generation != generation:
                    return


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
