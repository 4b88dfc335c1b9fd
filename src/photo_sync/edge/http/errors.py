"""The two ways a request fails on the wire, as the retry policy tells them apart.

`NoAnswer`: no answer's headers arrived (connect, TLS handshake, sending, or the headers
themselves failed or ran out of time); `BodyBroken`: the answer's headers did, its body
then broke off. `reason` names the underlying error (its type, e.g.
`ConnectionRefusedError`), never a secret.
"""

from __future__ import annotations

__all__ = ["BodyBroken", "NoAnswer", "TransportError"]


class TransportError(Exception):
    """A request that failed on the wire."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class NoAnswer(TransportError):
    """No complete answer headers. `timed_out`: the attempt's deadline or a socket timeout
    ended it; `tls`: what failed in verifying the peer's certificate, when that was it."""

    def __init__(self, reason: str, *, timed_out: bool = False, tls: str | None = None):
        super().__init__(reason)
        self.timed_out = timed_out
        self.tls = tls


class BodyBroken(TransportError):
    """The body ended early or its connection failed after the headers."""
