"""Deadlines that hold whatever phase a request is in.

A socket read timeout alone never ends an answer (headers or body) that trickles in just
faster than the timeout. Every attempt therefore runs under a `Watch`: the connections it
uses are attached to it (`HTTPClient.request` does that), and one daemon thread shuts the sockets
of every watch past its deadline, which wakes a thread blocked in connect, the TLS
handshake, or a read. The body reader also checks `Watch.past()` between reads.
"""

from __future__ import annotations

import socket
import threading
import time

__all__ = ["WATCHDOG", "Watch", "Watchdog"]


class Watch:
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
        """Remember a connection (anything with a `sock`) to shut when the deadline passes."""
        if conn not in self.conns:
            self.conns.append(conn)

    def cut(self) -> None:
        """Shut the watched sockets, so a read blocked on one returns at once."""
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

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc) -> None:
        WATCHDOG.release(self)


class Watchdog:
    """Holds every running attempt's deadline; a daemon thread shuts the sockets of those
    past it."""

    TICK = 0.25  # how often an expired attempt's sockets are shut again (a TLS socket
    # replaces the plain one mid-handshake)

    def __init__(self):
        self._cond = threading.Condition()
        self._watches: set[Watch] = set()
        self._thread: threading.Thread | None = None

    def start(self, seconds: float, first: float | None = None) -> Watch:
        """Begin an attempt that may take `seconds` (its headers `first`); use it as a
        context manager, which releases it."""
        watch = Watch(seconds, first)
        with self._cond:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadline-watchdog",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        return watch

    def release(self, watch: Watch) -> None:
        """The attempt is over (done, failed or cut)."""
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


WATCHDOG = Watchdog()

