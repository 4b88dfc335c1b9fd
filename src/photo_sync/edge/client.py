"""The edge's HTTP client for the HO sync API.

One pooled session shared by the download threads; retries with exponential
backoff and jitter on connection errors and 5xx; honours 429 Retry-After;
renews the token once on a 401. When HO stays unreachable the run is
aborted (HOUnreachable) rather than marking every photo failed.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter

from photo_sync import __version__, protocol
from photo_sync.errors import HOError, HOUnreachable
from photo_sync.protocol import Checksums

log = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024
MAX_RETRY_AFTER = 120.0
MAX_THROTTLED = 60  # 429s with Retry-After honoured per request before counting as failures


class PhotoUnavailable(Exception):
    """HO answers, but cannot deliver this one photo (its body keeps breaking off, or HO
    keeps answering 5xx for it): a failure of the photo, not of the run."""


class PhotoRejected(Exception):
    """This one photo's answer cannot be stored (bad bytes, too large, too slow): the photo
    fails alone, keeps whatever the store held, and the run goes on. The message is the
    reason an operator reads in the summary and HO reads in the status report."""


class VerificationError(PhotoRejected):
    """The bytes received do not match the checksums HO gave for them."""


class BodyTooLarge(PhotoRejected):
    """The body ran past the photo's listed size or PHOTO_SYNC_EDGE_MAX_PHOTO_BYTES."""


class DeadlineExceeded(PhotoRejected):
    """The photo arrived slower than its deadline allows (PHOTO_SYNC_EDGE_MIN_RATE)."""


class RateLimiter:
    """A bandwidth cap shared by all download threads (bytes per second; 0 = none)."""

    def __init__(self, rate: int, burst_seconds: float = 0.25):
        self.rate = rate
        self.burst = burst_seconds
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def acquire(self, nbytes: int) -> None:
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
    data: bytes
    checksum: str
    checksum_sha256: str | None
    version: int
    content_type: str


def _retry_after(response: requests.Response, default: float) -> float:
    value = response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        seconds = (parsed.timestamp() - time.time()) if parsed else default
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


def _error_of(response: requests.Response) -> HOError:
    try:
        body = response.json()
        code, detail = str(body.get("error", "error")), str(body.get("detail", ""))
    except ValueError:
        code, detail = "error", response.text[:200]
    return HOError(response.status_code, code, detail)


def _verify(sums: Checksums, md5: str, sha256: str | None, source: str) -> None:
    if not md5:
        raise VerificationError(f"{source} gave no MD5 checksum")
    if sums.md5 != md5:
        raise VerificationError(f"MD5 mismatch: got {sums.md5}, {source} says {md5} "
                                f"({sums.size} bytes received)")
    if sha256 and sums.sha256 != sha256:
        raise VerificationError(f"SHA-256 mismatch: got {sums.sha256[:16]}..., "
                                f"{source} says {sha256[:16]}...")


class HOClient:
    """The store's side of the HO sync API: token, feed pages, verified downloads, reports."""

    @classmethod
    def from_settings(cls, settings, *, pool_size: int | None = None) -> "HOClient":
        """The client an edge run uses, configured from its `EdgeSettings`."""
        return cls(settings.ho_url, settings.store_id, settings.store_secret,
                   timeout=settings.timeout, retries=settings.retries,
                   pool_size=pool_size or settings.concurrency + 4,
                   limiter=RateLimiter(settings.bandwidth_limit))

    def __init__(self, base_url: str, store_id: str, secret: str, *, timeout: float = 60.0,
                 retries: int = 5, backoff: float = 0.5, max_backoff: float = 15.0,
                 pool_size: int = 16, limiter: RateLimiter | None = None):
        self.base_url = base_url.rstrip("/")
        self.api = self.base_url + protocol.API_PREFIX
        self.store_id = store_id
        self._secret = secret
        self.timeout = (min(10.0, timeout), timeout)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.limiter = limiter or RateLimiter(0)
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = f"photo-sync-edge/{__version__}"
        self._token: str | None = None
        self._token_lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    # Auth -------------------------------------------------------------------------------

    def authenticate(self) -> None:
        """Get a fresh token; HOUnreachable when HO refuses the credentials."""
        response = self._send("POST", "/auth/token/", authenticated=False,
                              json={"store_id": self.store_id, "secret": self._secret})
        if response.status_code == 401:
            raise HOUnreachable(
                f"HO at {self.base_url} refused the credentials of store {self.store_id}: "
                "check PHOTO_SYNC_EDGE_STORE_ID and PHOTO_SYNC_EDGE_STORE_SECRET "
                "(is the store registered and active at HO?)")
        if response.status_code != 200:
            raise HOUnreachable(f"HO at {self.base_url} did not issue a token: "
                                f"{_error_of(response)}")
        self._token = response.json()["access"]

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

    def _send(self, method: str, path: str, *, authenticated: bool = True, stream=False,
              **kwargs) -> requests.Response:
        """One request with the retry policy; returns any response that is not retried."""
        url = self.api + path
        renewed = False
        attempt = 0
        throttled = 0
        while True:
            headers = dict(kwargs.pop("headers", None) or {})
            if authenticated:
                auth = self._auth_header()
                headers.update(auth)
            try:
                response = self.session.request(method, url, headers=headers, stream=stream,
                                                timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt >= self.retries:
                    raise HOUnreachable(f"cannot reach HO API at {self.base_url} "
                                        f"({type(exc).__name__}) after {attempt + 1} tries: "
                                        "check PHOTO_SYNC_EDGE_HO_URL and the WAN link") from None
                self._sleep_backoff(attempt)
                attempt += 1
                continue
            status = response.status_code
            if status == 401 and authenticated and not renewed:
                response.close()
                renewed = True
                self._renew(auth)
                continue
            if status == 429 and "Retry-After" in response.headers and throttled < MAX_THROTTLED:
                # HO asked us to slow down, not failed: its waits do not use up the retries.
                throttled += 1
                wait = _retry_after(response, self.backoff)
                response.close()
                time.sleep(wait)
                continue
            if status == 429 or status >= 500:
                if attempt >= self.retries:
                    error = _error_of(response)
                    response.close()
                    raise HOUnreachable(f"HO API at {self.base_url} keeps answering {status} "
                                        f"({error.code}) after {attempt + 1} tries", status)
                wait = _retry_after(response, self.backoff * 2 ** attempt) if status in (
                    429, 503) and "Retry-After" in response.headers else None
                response.close()
                if wait is not None:
                    time.sleep(wait)
                else:
                    self._sleep_backoff(attempt)
                attempt += 1
                continue
            if status == 401 and authenticated:
                raise HOUnreachable(f"HO at {self.base_url} refuses this store's token: "
                                    "is the store disabled or its secret rotated?")
            return response

    # API --------------------------------------------------------------------------------

    def list_page(self, *, cursor: str | None = None, limit: int = 500, offset: int = 0,
                  since: str | None = None) -> dict:
        params = {"store_id": self.store_id, "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        else:
            params["offset"] = offset
            if since:
                params["since"] = since
        response = self._send("GET", "/sync/product-photos/", params=params)
        if response.status_code != 200:
            raise HOUnreachable(f"HO refused the photo list: {_error_of(response)}")
        return response.json()

    def download(self, photo: dict) -> Download:
        """The verified bytes of a listed photo (`photo` is its feed item). HOError for 4xx;
        VerificationError for bad bytes."""
        photo_id = str(photo["id"])
        for attempt in range(self.retries + 1):
            try:
                response = self._send("GET", f"/sync/product-photos/{photo_id}/download/",
                                      params={"store_id": self.store_id}, stream=True)
            except HOUnreachable as exc:
                if exc.status is not None and exc.status >= 500:
                    raise PhotoUnavailable(str(exc)) from None
                raise
            try:
                if response.status_code != 200:
                    raise _error_of(response)
                chunks, sums = self._read_body(response)
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                # The body broke off: try the whole photo again.
                if attempt >= self.retries:
                    raise PhotoUnavailable(f"download of photo {photo_id} from HO API at "
                                           f"{self.base_url} keeps breaking off "
                                           f"({type(exc).__name__})") from None
                self._sleep_backoff(attempt)
                continue
            finally:
                response.close()
            headers = response.headers
            expected_md5 = headers.get(protocol.HEADER_CHECKSUM, "").lower()
            expected_sha = headers.get(protocol.HEADER_CHECKSUM_SHA256, "").lower() or None
            if not expected_md5:
                raise VerificationError("HO sent no X-Checksum header")
            _verify(sums, expected_md5, expected_sha, "HO")
            try:
                version = int(headers.get(protocol.HEADER_VERSION, ""))
            except ValueError:
                raise VerificationError("HO sent no valid X-Version header") from None
            return Download(b"".join(chunks), sums.md5, expected_sha, version,
                            headers.get("Content-Type", "application/octet-stream"))
        raise AssertionError("unreachable")

    def _read_body(self, response: requests.Response) -> tuple[list[bytes], Checksums]:
        sums = Checksums()
        chunks = []
        for chunk in response.iter_content(CHUNK_SIZE):
            self.limiter.acquire(len(chunk))
            sums.update(chunk)
            chunks.append(chunk)
        return chunks, sums

    def fetch_presigned(self, url: str, photo: dict) -> Download:
        """The bytes of a photo straight from S3 (a URL HO presigned), verified against the
        checksums of the listing. One try: the caller falls back to the API on any error
        but a checksum mismatch."""
        response = None
        try:
            response = self.session.get(url, stream=True, timeout=self.timeout)
            if response.status_code != 200:
                raise PhotoUnavailable(f"presigned GET answered {response.status_code}")
            chunks, sums = self._read_body(response)
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            raise PhotoUnavailable(f"presigned GET failed ({type(exc).__name__})") from None
        finally:
            if response is not None:
                response.close()
        _verify(sums, (photo.get("checksum") or "").lower(),
                (photo.get("checksum_sha256") or "").lower() or None, "the HO catalog")
        return Download(b"".join(chunks), sums.md5, photo.get("checksum_sha256"),
                        int(photo["version"]), photo.get("content_type")
                        or response.headers.get("Content-Type", "application/octet-stream"))


    def report(self, batch: list[dict]) -> int:
        response = self._send("POST", "/sync/product-photos/status/",
                              json={"store_id": self.store_id, "sync_batch": batch})
        if response.status_code != 200:
            raise _error_of(response)
        return int(response.json().get("count", len(batch)))
