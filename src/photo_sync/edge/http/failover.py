"""Which of HO's URLs (its gateways) the agent uses: the same one until it fails.

PHOTO_SYNC_EDGE_HO_URL may name several gateways in front of the same API hosts. Every
request goes to the current one; when it gives no answer, or answers 502 or 504 (what a
gateway says when its upstreams fail; the API itself never sends either), the request
moves on to the next URL at once, without a backoff and without using up a retry, and the
next requests stay there. A request counts one try only when every URL failed it in turn.

Sticky rather than round-robin: a run keeps its keep-alive connections on one gateway, a
gateway that is down costs one failed connect per thread instead of one per request, and
the gateways' per-token limits (`limit_conn`) see one run in one place.
"""

from __future__ import annotations

import threading

__all__ = ["GATEWAY_STATUSES", "Gateways"]

# Answers that are the gateway's own (the API behind it sends neither): another gateway
# may reach API hosts this one cannot.
GATEWAY_STATUSES = frozenset({502, 504})


class Gateways:
    """The base URLs of HO, and the one requests use now (shared by threads)."""

    def __init__(self, urls: list[str]):
        if not urls:
            raise ValueError("no HO URL")
        self.urls = [url.rstrip("/") for url in urls]
        self._index = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.urls)

    @property
    def current(self) -> str:
        """The URL requests go to now."""
        return self.urls[self._index]

    def pick(self, tried) -> str:
        """The URL a request's next attempt goes to: the current one, unless this request
        already tried it in this round, then the next one it did not try."""
        with self._lock:
            for step in range(len(self.urls)):
                url = self.urls[(self._index + step) % len(self.urls)]
                if url not in tried:
                    return url
            return self.urls[self._index]

    def failed(self, url: str) -> None:
        """`url` failed a request: when it is still the current one, the next URL is."""
        with self._lock:
            if self.urls[self._index] == url:
                self._index = (self._index + 1) % len(self.urls)
