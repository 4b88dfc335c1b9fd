"""Photo bytes in MinIO (or any S3 server), through the MinIO SDK.

Downloads are streamed chunk by chunk: a worker never holds a whole photo.
The S3 ETag is never used as a checksum (multipart uploads make it something
else); checksums come from the catalog.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import urllib.parse
from collections.abc import Iterator

import urllib3
from minio import Minio
from minio.error import S3Error

# The one error model: kept importable from here for the callers that always did.
from photo_sync.errors import StorageRefused, StorageUnavailable

__all__ = ["CHUNK_SIZE", "ObjectMissing", "ObjectStream", "Storage", "StorageRefused",
           "StorageUnavailable"]

CHUNK_SIZE = 256 * 1024
_CHECK = ("check PHOTO_SYNC_HO_S3_ENDPOINT, _S3_ACCESS_KEY, _S3_SECRET_KEY and _S3_BUCKET "
          "and that the S3 server is running")


class ObjectMissing(Exception):
    """The catalog names an object the S3 server does not have."""


def _is_missing(exc: S3Error) -> bool:
    return exc.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket")


# S3 codes (and HTTP statuses, for answers without a body, e.g. to HEAD) that mean "S3 will
# not do this for HO": the object may be there; retrying after the cause is fixed works.
_REFUSED_CODES = {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId",
                  "RequestTimeTooSkewed", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
                  "AuthorizationHeaderMalformed", "AccountProblem"}


def _refusal(exc: S3Error, endpoint: str, doing: str) -> StorageRefused | None:
    """A StorageRefused naming the cause when `exc` is S3 refusing HO, else None."""
    status = getattr(exc.response, "status", None)
    if exc.code not in _REFUSED_CODES and status not in (401, 403):
        return None
    return StorageRefused(f"S3 at {endpoint} refused {doing} ({exc.code or status}): check "
                          "PHOTO_SYNC_HO_S3_ACCESS_KEY and _S3_SECRET_KEY (rotated?) and that "
                          "HO's clock is within minutes of S3's", exc.code or str(status))


def _endpoint_and_scheme(endpoint: str, secure: bool) -> tuple[str, bool]:
    """(host:port, secure) of an S3 endpoint given as host:port or as an http(s):// URL."""
    if "://" not in endpoint:
        return endpoint, secure
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
        raise ValueError(f"S3 endpoint {endpoint!r} must be host:port or http(s)://host:port")
    return parts.netloc, parts.scheme == "https"


class ObjectStream:
    """An S3 object's bytes as a WSGI iterable.

    The WSGI server calls close() whether or not the body was sent in full (a
    store that hangs up mid-download included); close() returns the S3
    connection and runs the `on_close` callbacks exactly once.
    """

    def __init__(self, response):
        self._response = response
        self._closed = False
        self.on_close: list = []

    def __iter__(self) -> Iterator[bytes]:
        return self._response.stream(CHUNK_SIZE)

    def close(self) -> None:
        """Return the S3 connection and run the `on_close` callbacks, once."""
        if self._closed:
            return
        self._closed = True
        try:
            self._response.close()
            self._response.release_conn()
        finally:
            for callback in self.on_close:
                callback()


class Presigner:
    """SigV4 query-string signing of GET URLs (what minio's presigned_get_object makes).

    minio rebuilds the URL, the scope and the signing key on every call; a download behind
    the gateway needs one presign, so the per-day signing key and the fixed parts are kept
    here. The result is byte for byte minio's for the same time (tests compare them)."""

    def __init__(self, client: Minio, bucket: str, access_key: str, secret_key: str,
                 region: str):
        # minio decides the host (and whether a default port is kept); ask it once, no
        # network call since the region is given.
        sample = urllib.parse.urlsplit(client.presigned_get_object(
            bucket, "x", expires=dt.timedelta(seconds=60)))
        self.origin = f"{sample.scheme}://{sample.netloc}"
        self._host = sample.netloc
        self._bucket_path = f"/{bucket}/"
        self._access_key = access_key
        self._secret_key = secret_key
        self._region = region
        # (day, signing key) in one attribute: threads read and replace it whole.
        self._cached = ("", b"")

    def path_and_query(self, object_key: str, ttl_seconds: int,
                       now: dt.datetime | None = None) -> str:
        """`/<bucket>/<key>?<signed query>` of a GET valid `ttl_seconds` from `now`."""
        if not 1 <= ttl_seconds <= 604800:
            raise ValueError("expires must be between 1 second and 7 days")
        now = now or dt.datetime.now(dt.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        cached = self._cached
        if cached[0] != day:
            cached = self._cached = (day, _derive_key(self._secret_key, day, self._region))
        key = cached[1]
        scope = f"{day}/{self._region}/s3/aws4_request"
        path = self._bucket_path + urllib.parse.quote(object_key, safe="/").replace("%7E", "~")
        credential = urllib.parse.quote(f"{self._access_key}/{scope}", safe="")
        query = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={credential}"
                 f"&X-Amz-Date={amz_date}&X-Amz-Expires={ttl_seconds}"
                 "&X-Amz-SignedHeaders=host")
        # The query above is already in canonical (sorted) order.
        canonical = f"GET\n{path}\n{query}\nhost:{self._host}\n\nhost\nUNSIGNED-PAYLOAD"
        to_sign = (f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
                   f"{hashlib.sha256(canonical.encode()).hexdigest()}")
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        return f"{path}?{query}&X-Amz-Signature={signature}"


def _derive_key(secret_key: str, day: str, region: str) -> bytes:
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


class Storage:
    """HO's photo bucket: put, stream, presign and remove objects, check the bucket."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str,
                 secure: bool = False, region: str = "us-east-1", pool_size: int = 32,
                 public_endpoint: str = ""):
        # Short connect timeout and no SDK retry loop: an S3 outage turns into a
        # prompt 503 that the edge retries, not a worker stuck for a minute.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=3.0, read=30.0),
            maxsize=pool_size,
            retries=urllib3.Retry(total=1, connect=1, read=0, backoff_factor=0.1,
                                  status_forcelist=()),
        )
        self.bucket = bucket
        self.endpoint = endpoint
        self.secure = secure
        self._client = Minio(endpoint, access_key=access_key, secret_key=secret_key,
                             secure=secure, region=region, http_client=http)
        # Presigned URLs are signed for the host the stores use; signing needs no network
        # call because the region is given. `https://gateway:443` names the scheme too (the
        # stores reach S3 through the ho_gateway's TLS while HO talks plain http to S3).
        public_host, public_secure = _endpoint_and_scheme(public_endpoint or endpoint, secure)
        self._public = Minio(public_host, access_key=access_key, secret_key=secret_key,
                             secure=public_secure, region=region, http_client=http)
        self._signers: dict[str, Presigner] = {}
        self._signer_args = (bucket, access_key, secret_key, region)

    def _signer(self, which: str) -> Presigner:
        """The Presigner for HO's own endpoint ("own") or the stores' ("public"), made on
        first use so a bucket name minio refuses is a request's error, as it always was."""
        signer = self._signers.get(which)
        if signer is None:
            client = self._client if which == "own" else self._public
            signer = self._signers[which] = Presigner(client, *self._signer_args)
        return signer

    @classmethod
    def from_settings(cls, settings) -> "Storage":
        """A client for the S3 store in `HOSettings`; ConfigError when S3 is not set up."""
        settings.require_s3()
        return cls(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key,
                   settings.s3_bucket, settings.s3_secure, settings.s3_region,
                   public_endpoint=settings.s3_public_endpoint)

    def presign(self, object_key: str, ttl_seconds: int) -> str:
        """A GET URL for one object that works without credentials until it expires."""
        signer = self._signer("public")
        return signer.origin + signer.path_and_query(object_key, ttl_seconds)

    def presign_path(self, object_key: str, ttl_seconds: int) -> str:
        """`/<bucket>/<key>?<presigned query>` of a GET signed for HO's own S3 endpoint.

        For the gateway's X-Accel-Redirect: nginx sends it to S3 with `Host:` set to
        PHOTO_SYNC_HO_S3_ENDPOINT (ho_gateway_s3_host), the host it was signed for."""
        return self._signer("own").path_and_query(object_key, ttl_seconds)

    def public_url(self, object_key: str) -> str:
        """The object's plain S3 URL (for `image_url` when no PUBLIC_IMAGE_BASE is set)."""
        scheme = "https" if self.secure else "http"
        return f"{scheme}://{self.endpoint}/{self.bucket}/{object_key}"

    def ensure_bucket(self) -> bool:
        """Create the bucket when missing; True when it was created."""
        try:
            if self._client.bucket_exists(self.bucket):
                return False
            self._client.make_bucket(self.bucket)
            return True
        except (S3Error, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"cannot create bucket {self.bucket} at S3 {self.endpoint} "
                                     f"({exc}): {_CHECK}") from exc

    def check(self) -> None:
        """Raise StorageUnavailable unless the bucket answers."""
        try:
            if not self._client.bucket_exists(self.bucket):
                raise StorageUnavailable(f"bucket {self.bucket} does not exist")
        except S3Error as exc:
            refused = _refusal(exc, self.endpoint, f"to read bucket {self.bucket}")
            if refused:
                raise refused from exc
            raise StorageUnavailable(f"S3 at {self.endpoint}: {exc}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"S3 at {self.endpoint}: {exc}") from exc

    def open(self, object_key: str) -> tuple[int, "ObjectStream"]:
        """(size, stream) of an object; the stream's close() releases the S3 connection."""
        try:
            response = self._client.get_object(self.bucket, object_key)
        except S3Error as exc:
            if _is_missing(exc):
                raise ObjectMissing(object_key) from exc
            refused = _refusal(exc, self.endpoint, f"GET {object_key}")
            if refused:
                raise refused from exc
            raise StorageUnavailable(f"S3 GET {object_key}: {exc.code}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"S3 at {self.endpoint}: {exc}") from exc
        size = int(response.headers.get("Content-Length", "0"))
        return size, ObjectStream(response)

    def put(self, object_key: str, data: bytes, content_type: str) -> None:
        """Upload one object."""
        try:
            self._client.put_object(self.bucket, object_key, io.BytesIO(data), len(data),
                                    content_type=content_type)
        except (S3Error, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"S3 PUT {object_key} at {self.endpoint} ({exc}): "
                                     f"{_CHECK}; no photo whose bytes did not reach S3 is in "
                                     "the catalog: run the import again") from exc

    def remove(self, object_key: str) -> None:
        """Delete one object."""
        try:
            self._client.remove_object(self.bucket, object_key)
        except (S3Error, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"S3 DELETE {object_key}: {exc}") from exc
