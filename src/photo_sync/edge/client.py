"""The store's side of the HO sync API: token, feed pages, verified downloads, reports.

Every call goes through the agent's one HTTP client (`photo_sync.edge.http`): retries with
exponential backoff and jitter on connection errors and 5xx; honours 429 Retry-After;
renews the token once on a 401. When HO stays unreachable the run is aborted
(HOUnreachable) rather than marking every photo failed. PHOTO_SYNC_EDGE_HO_URL may list
several gateways: a request moves on to the next when the one in use gives no answer or
answers 502/504, without spending a retry, and later requests stay there
(`http.failover`); the error when every one fails names each URL and why.

Whatever HO (or a presigned S3 URL) sends, the agent's memory and time stay bounded:

- Memory: a photo's body goes into one buffer of its listed size, allocated before the
  first byte, and is cut off (BodyTooLarge) as soon as it runs past min(listed size,
  PHOTO_SYNC_EDGE_MAX_PHOTO_BYTES); a larger Content-Length is refused unread. Bodies
  are read raw: the agent asks for `identity`, and a gzip/deflate body is inflated only
  under the same bound (any other encoding is refused). How many buffers exist at once
  is the engine's one budget (`engine.IN_FLIGHT_BYTES`). JSON answers (token, feed
  page, report) are capped too (`json_cap`).
- Time: every attempt runs under a deadline kept by the watchdog (`http.watchdog`), which
  shuts the connection's socket when the deadline passes, whatever phase the request is
  in (connect, TLS handshake, headers, body); the body reader also checks it between
  reads. A photo's deadline is `download_deadline()`; a JSON answer must keep up MIN_RATE
  after TIMEOUT seconds of grace.
- TLS: HO's certificate is verified against PHOTO_SYNC_EDGE_CA_BUNDLE when set (else the
  system CAs; REQUESTS_CA_BUNDLE and the like play no part); redirects are never
  followed, neither from the API nor from presigned URLs, and a presigned URL is fetched
  only from PHOTO_SYNC_EDGE_PRESIGNED_ORIGIN.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from dataclasses import dataclass

from photo_sync import __version__, protocol
from photo_sync.edge.http.body import (Cut, RateLimiter, content_length, encoding, peek, pump,
                                       read_photo)
from photo_sync.edge.http.client import HTTPClient, Response
from photo_sync.edge.http.errors import BodyBroken, NoAnswer
from photo_sync.edge.http.failover import GATEWAY_STATUSES, Gateways
from photo_sync.edge.http.retry import MAX_THROTTLED, Backoff, retry_after
from photo_sync.edge.http.watchdog import WATCHDOG, Watch
from photo_sync.edge.settings import DEFAULT_MAX_PHOTO_BYTES, DEFAULT_MIN_RATE, ho_urls, origin_of
from photo_sync.errors import HOError, HOUnreachable
from photo_sync.protocol import Checksums

__all__ = ["BodyTooLarge", "DeadlineExceeded", "Download", "HOClient", "HOError", "LinkRefused",
           "HOUnreachable", "PhotoRejected", "PhotoUnavailable", "RateLimiter",
           "VerificationError", "download_deadline"]

log = logging.getLogger(__name__)

# A JSON answer may be this large, plus JSON_ITEM_BYTES per photo a page may list (a feed
# item with a presigned URL is about 1.5 KB: the allowance is ten times that).
JSON_BASE_BYTES = 1024 * 1024
JSON_ITEM_BYTES = 16 * 1024
# Seconds to open a connection; reads get PHOTO_SYNC_EDGE_TIMEOUT.
CONNECT_TIMEOUT = 10.0

class PhotoUnavailable(Exception):
    """HO answers, but cannot deliver this one photo (its body keeps breaking off, or HO
    keeps answering 5xx for it): a failure of the photo, not of the run."""

    kind = protocol.FAILURE_UNAVAILABLE


# The gateway's answers to a signed link it will not serve: 410 expired, 403 not signed for
# this store and photo (or signed with a secret since rotated). Either way a fresh listing
# gives a fresh link.
LINK_REFUSED_STATUSES = (403, 410)


class LinkRefused(PhotoUnavailable):
    """The gateway refused a signed link (`status` 410: expired; 403: not valid)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


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


def _error_of(response: Response, watch: Watch) -> HOError:
    """HOError from an answer that is not the one asked for (its body read bounded)."""
    status = response.status
    if 300 <= status < 400:
        return HOError(status, "redirect", f"HO redirected to {response.headers.get('Location')!r}"
                       "; the agent follows no redirects: set PHOTO_SYNC_EDGE_HO_URL to the "
                       "address HO answers at")
    body = peek(response, watch)
    try:
        parsed = json.loads(body)
        code, detail = str(parsed.get("error", "error")), str(parsed.get("detail", ""))
    except (ValueError, AttributeError):
        code, detail = "error", body[:200].decode("utf-8", "replace")
    return HOError(status, code[:100], detail[:500])


def _at(tried: dict, how: str = "") -> str:
    """Where a request failed, for its error: `at URL (why)`, or each URL tried and why."""
    how = f" {how}" if how else ""
    if len(tried) == 1:
        ((url, why),) = tried.items()
        return f"at {url}{how} ({why})"
    return (f"at any of its {len(tried)} URLs{how} ("
            + "; ".join(f"{url}: {why}" for url, why in tried.items()) + ")")


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
        self.gateways = Gateways(ho_urls(base_url))
        self.store_id = store_id
        self._secret = secret
        self.timeout_s = timeout
        self.retries = retries
        self.backoff = backoff
        self._backoff = Backoff(backoff, max_backoff)
        self.limiter = limiter or RateLimiter(0)
        self.concurrency = concurrency
        self.max_photo_bytes = max_photo_bytes
        self.min_rate = min_rate
        self.presigned_origin = origin_of(presigned_origin) if presigned_origin else None
        # One client for HO and the presigned origin. An origin that does not answer a SYN
        # is given up in 10 s; reads get TIMEOUT.
        self.http = HTTPClient(user_agent=f"photo-sync-edge/{__version__}", ca_bundle=ca_bundle,
                               connect_timeout=min(CONNECT_TIMEOUT, timeout),
                               read_timeout=timeout, pool_size=pool_size)
        self._token: str | None = None
        self._token_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """The HO URL requests go to now (of PHOTO_SYNC_EDGE_HO_URL's one or several)."""
        return self.gateways.current

    def close(self) -> None:
        """Close the pooled connections."""
        self.http.close()

    # Auth -------------------------------------------------------------------------------

    def authenticate(self) -> None:
        """Get a fresh token; HOUnreachable when HO refuses the credentials."""
        status, body = self._call_json("POST", "/auth/token/", "the token answer",
                                       JSON_BASE_BYTES, authenticated=False,
                                       json_body={"store_id": self.store_id,
                                                  "secret": self._secret})
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

    def _call(self, method: str, path: str, *, seconds: float, read,
              authenticated: bool = True, params: dict | None = None,
              json_body: dict | None = None):
        """One API call with the retry policy (connection errors, 5xx and 429 are retried;
        a 401 renews the token once). Each attempt runs under its own deadline: its headers
        within TIMEOUT (else it counts as a timeout, and is retried), all of it within
        `seconds`; the answer that is not retried goes to `read(response, watch)` within
        that deadline, and its result is returned."""
        target = protocol.API_PREFIX + path + (
            f"?{urllib.parse.urlencode(params)}" if params else "")
        body = json.dumps(json_body).encode() if json_body is not None else None
        extra_headers = {"Content-Type": "application/json"} if body is not None else {}
        renewed = False
        attempt = 0
        throttled = 0
        tried: dict[str, str] = {}  # HO URL -> why it failed, in this round of tries
        tls_failed: set[str] = set()
        while True:
            headers = dict(extra_headers)
            if authenticated:
                auth = self._auth_header()
                headers.update(auth)
            base = self.gateways.pick(tried)
            with WATCHDOG.start(seconds, self.timeout_s) as watch:
                try:
                    response = self.http.request(method, base + target, watch=watch,
                                                 headers=headers, body=body)
                except NoAnswer as exc:
                    tried[base] = exc.tls or (
                        f"no answer within PHOTO_SYNC_EDGE_TIMEOUT={self.timeout_s:g} s"
                        if exc.timed_out else exc.reason)
                    if exc.tls:
                        tls_failed.add(base)
                    if len(tried) < len(self.gateways):
                        self.gateways.failed(base)  # another gateway, at once
                        continue
                    if tls_failed == set(tried):
                        # Not retried: a certificate does not fix itself between tries.
                        raise HOUnreachable(
                            f"cannot reach HO API {_at(tried, 'over TLS')}: set "
                            "PHOTO_SYNC_EDGE_CA_BUNDLE to the PEM "
                            "file of the CA that signed HO's certificate, and check that "
                            "PHOTO_SYNC_EDGE_HO_URL names the host the certificate is for"
                            ) from None
                    if attempt >= self.retries:
                        raise HOUnreachable(f"cannot reach HO API {_at(tried)} after "
                                            f"{attempt + 1} tries: check "
                                            "PHOTO_SYNC_EDGE_HO_URL and the WAN link") from None
                    self.gateways.failed(base)
                    tried, tls_failed = {}, set()
                    self._backoff.sleep(attempt)
                    attempt += 1
                    continue
                try:
                    status = response.status
                    if status in GATEWAY_STATUSES and len(tried) + 1 < len(self.gateways):
                        # This gateway cannot reach the API hosts; another may.
                        tried[base] = f"answered {status}"
                        self.gateways.failed(base)
                        continue
                    retried = (status == 401 and authenticated and not renewed) or (
                        status == 429 or status >= 500)
                    if not retried:
                        if status == 401 and authenticated:
                            raise HOUnreachable(f"HO at {base} refuses this store's "
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
                time.sleep(retry_after(response.headers, self.backoff))
                continue
            if attempt >= self.retries:
                if tried:  # every gateway answered 502 or 504
                    raise HOUnreachable(
                        f"HO API {_at({**tried, base: f'answered {status} ({error.code})'})} "
                        f"after {attempt + 1} tries", status)
                raise HOUnreachable(f"HO API at {base} keeps answering {status} "
                                    f"({error.code}) after {attempt + 1} tries", status)
            if status in GATEWAY_STATUSES:
                self.gateways.failed(base)
            tried, tls_failed = {}, set()
            if status in (429, 503) and "Retry-After" in response.headers:
                time.sleep(retry_after(response.headers, self.backoff * 2 ** attempt))
            else:
                self._backoff.sleep(attempt)
            attempt += 1

    def _call_json(self, method: str, path: str, what: str, cap: int, **kwargs):
        """(status, parsed JSON) of a call answered 200, else (status, HOError). The body may
        be `cap` bytes at most and must keep up MIN_RATE after TIMEOUT seconds."""

        def read(response, watch):
            if response.status != 200:
                return response.status, _error_of(response, watch)
            length = content_length(response)
            if length is not None and length > cap and encoding(response) == "identity":
                raise self._json_too_large(what, cap, length)
            body = bytearray()
            try:
                pump(response, watch, cap, body.extend, grace=self.timeout_s,
                     min_rate=self.min_rate)
            except Cut as cut:
                if cut.kind == "late":
                    raise late(watch, cut.received) from None
                if cut.kind == "large":
                    raise self._json_too_large(what, cap, None) from None
                why = cut.detail or (f"Content-Encoding {encoding(response)!r}; the agent "
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
            except BodyBroken as exc:
                # The answer broke off after its headers: ask again.
                if attempt >= self.retries:
                    raise HOUnreachable(f"HO API at {self.base_url} keeps breaking off {what} "
                                        f"({exc.reason}) after {attempt + 1} tries: "
                                        "check the WAN link") from None
                self._backoff.sleep(attempt)
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

    def _read_photo(self, response: Response, watch: Watch, photo: dict, limit: int,
                    source: str) -> tuple[bytes | bytearray | memoryview, Checksums]:
        """The body of a photo in one buffer allocated up front, and its checksums."""
        try:
            return read_photo(response, watch, limit, self.limiter)
        except Cut as cut:
            if cut.kind == "large":
                raise self._too_large(photo, limit, source, announced=cut.announced,
                                      received=cut.received) from None
            if cut.kind == "late":
                raise self._late(photo, watch, cut.received, source) from None
            why = cut.detail or "not decoded by the agent, which asks for identity"
            raise PhotoRejected(f"photo {photo['id']}: {source} sent Content-Encoding "
                                f"{encoding(response)!r} ({why}): not stored") from None

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

    def _late(self, photo: dict, watch: Watch, received: int, source: str) -> DeadlineExceeded:
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
            if response.status != 200:
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
            except BodyBroken as exc:
                # The body broke off: try the whole photo again.
                if attempt >= self.retries:
                    raise PhotoUnavailable(f"download of photo {photo_id} from HO API at "
                                           f"{self.base_url} keeps breaking off "
                                           f"({exc.reason})") from None
                self._backoff.sleep(attempt)
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
        return self._fetch_direct(url, photo, "presigned GET", "S3")

    def fetch_signed(self, path: str, photo: dict) -> Download:
        """The bytes of a photo through a signed link of the listing (`signed_url`, a path
        under /signed/ on HO's own origin, served by the gateway from S3), verified against
        the listing's checksums. LinkRefused when the gateway refuses the link (expired or
        not valid: list the page again); other PhotoUnavailable means "use the API"."""
        if not path.startswith(protocol.SIGNED_PREFIX):
            raise PhotoUnavailable(f"signed link not fetched: not a path under "
                                   f"{protocol.SIGNED_PREFIX}")
        return self._fetch_direct(self.base_url + path, photo, "signed link", "the HO gateway")

    def _fetch_direct(self, url: str, photo: dict, what: str, source: str) -> Download:
        """One GET of a photo's bytes outside the API (no token, no redirects, one try)."""
        limit = self.photo_limit(photo)
        with WATCHDOG.start(self.deadline(photo), self.timeout_s) as watch:
            try:
                response = self.http.request("GET", url, watch=watch)
            except NoAnswer as exc:
                if exc.timed_out:
                    raise PhotoUnavailable(f"{what}: no complete headers within "
                                           f"PHOTO_SYNC_EDGE_TIMEOUT={self.timeout_s:g} s"
                                           ) from None
                raise PhotoUnavailable(f"{what} failed ({exc.tls or exc.reason})") from None
            with response:
                if 300 <= response.status < 400:
                    raise PhotoUnavailable(f"{what} answered {response.status} "
                                           "(a redirect: not followed)")
                if response.status in LINK_REFUSED_STATUSES and what == "signed link":
                    raise LinkRefused(f"{what} answered {response.status}", response.status)
                if response.status != 200:
                    raise PhotoUnavailable(f"{what} answered {response.status}")
                try:
                    data, sums = self._read_photo(response, watch, photo, limit, source)
                except BodyBroken as exc:
                    raise PhotoUnavailable(f"{what} failed ({exc.reason})") from None
        _verify(sums, (photo.get("checksum") or "").lower(),
                (photo.get("checksum_sha256") or "").lower() or None, "the HO catalog")
        return Download(data, sums.md5, photo.get("checksum_sha256"),
                        int(photo["version"]), photo.get("content_type")
                        or response.headers.get("Content-Type", "application/octet-stream"))

    def report(self, batch: list[dict]) -> int:
        """Deliver one batch of per-photo statuses; the count HO recorded."""
        status, body = self._call_json("POST", "/sync/product-photos/status/",
                                       "the report answer", JSON_BASE_BYTES,
                                       json_body={"store_id": self.store_id, "sync_batch": batch})
        if status != 200:
            raise body
        try:
            return int(body.get("count", len(batch)))
        except (AttributeError, TypeError, ValueError):
            return len(batch)
