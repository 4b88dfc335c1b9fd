"""Photo bytes in MinIO (or any S3 server), through the MinIO SDK.

Downloads are streamed chunk by chunk: a worker never holds a whole photo.
The S3 ETag is never used as a checksum (multipart uploads make it something
else); checksums come from the catalog.
"""

from __future__ import annotations

import datetime as dt
import io
import urllib.parse
from collections.abc import Iterator

import urllib3
from minio import Minio
from minio.error import S3Error

# The one error model: kept importable from here for the callers that always did.
from photo_sync.errors import StorageUnavailable

__all__ = ["CHUNK_SIZE", "ObjectMissing", "ObjectStream", "Storage", "StorageUnavailable"]

CHUNK_SIZE = 256 * 1024
_CHECK = ("check PHOTO_SYNC_HO_S3_ENDPOINT, _S3_ACCESS_KEY, _S3_SECRET_KEY and _S3_BUCKET "
          "and that the S3 server is running")


class ObjectMissing(Exception):
    """The catalog names an object the S3 server does not have."""


def _is_missing(exc: S3Error) -> bool:
    return exc.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket")


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

    @classmethod
    def from_settings(cls, settings) -> "Storage":
        """A client for the S3 store in `HOSettings`; ConfigError when S3 is not set up."""
        settings.require_s3()
        return cls(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key,
                   settings.s3_bucket, settings.s3_secure, settings.s3_region,
                   public_endpoint=settings.s3_public_endpoint)

    def presign(self, object_key: str, ttl_seconds: int) -> str:
        """A GET URL for one object that works without credentials until it expires."""
        return self._public.presigned_get_object(self.bucket, object_key,
                                                 expires=dt.timedelta(seconds=ttl_seconds))

    def presign_path(self, object_key: str, ttl_seconds: int) -> str:
        """`/<bucket>/<key>?<presigned query>` of a GET signed for HO's own S3 endpoint.

        For the gateway's X-Accel-Redirect: nginx sends it to S3 with `Host:` set to
        PHOTO_SYNC_HO_S3_ENDPOINT (ho_gateway_s3_host), the host it was signed for."""
        url = self._client.presigned_get_object(self.bucket, object_key,
                                                expires=dt.timedelta(seconds=ttl_seconds))
        parts = urllib.parse.urlsplit(url)
        return f"{parts.path}?{parts.query}"

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
        except (S3Error, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"S3 at {self.endpoint}: {exc}") from exc

    def open(self, object_key: str) -> tuple[int, "ObjectStream"]:
        """(size, stream) of an object; the stream's close() releases the S3 connection."""
        try:
            response = self._client.get_object(self.bucket, object_key)
        except S3Error as exc:
            if _is_missing(exc):
                raise ObjectMissing(object_key) from exc
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
