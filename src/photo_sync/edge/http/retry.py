"""How long to wait before asking again: exponential backoff with jitter, and the wait a
429 or 503 asks for in Retry-After (seconds or an HTTP date), capped."""

from __future__ import annotations

import email.utils
import random
import time

__all__ = ["MAX_RETRY_AFTER", "MAX_THROTTLED", "Backoff", "retry_after"]

MAX_RETRY_AFTER = 120.0
MAX_THROTTLED = 60  # 429s with Retry-After honoured per request before counting as failures


class Backoff:
    """Waits of `base * 2**attempt` seconds, at most `cap`, each jittered to 50-100 %."""

    def __init__(self, base: float = 0.5, cap: float = 15.0):
        self.base = base
        self.cap = cap

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (0 = the first)."""
        return min(self.cap, self.base * 2 ** attempt) * (0.5 + random.random() / 2)

    def sleep(self, attempt: int) -> None:
        """Wait `delay(attempt)` seconds."""
        time.sleep(self.delay(attempt))


def retry_after(headers, default: float) -> float:
    """The seconds an answer's Retry-After asks for (`default` when it is unreadable),
    between 0 and MAX_RETRY_AFTER."""
    value = headers.get("Retry-After", "") or ""
    try:
        seconds = float(value)
    except ValueError:
        seconds = default
        if value:
            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                parsed = None
            if parsed is not None:
                seconds = parsed.timestamp() - time.time()
    return max(0.0, min(seconds, MAX_RETRY_AFTER))
