"""Signed download links: the listing's `signed_url`, checked by the ho_gateway, no API.

A link is `/signed/<store>/<expires>/<mac>/<md5>/<sha256 or ->/<version>/<bucket>/<key>?<S3
query>`. The gateway (roles/ho_gateway, `location ~ ^/signed/`) recomputes

    mac = base64url(MD5("<expires><store>/<md5>/<sha256 or ->/<version>/<bucket>/<key> <secret>"))

with nginx's secure_link over the path as nginx decodes it (`$uri`), refuses a link whose
mac differs (403) or whose expiry has passed (410), and then proxies the rest of the path
and the query to S3 exactly as the X-Accel-Redirect location does. What this holds:

- The store id, the expiry, the checksums and the version are under the mac: a store cannot
  spend another store's download cap, stretch a link's life, or fetch another key (the S3
  query, which the mac does not cover, is itself signed for that one key by SigV4).
- The S3 presign outlives the link by PRESIGN_MARGIN, so S3 never refuses a link nginx
  still accepts; the link's expiry is the one that counts.
- Nothing here calls S3 or the catalog: signing a page is local HMAC work, once per
  listing, and a download through the link runs no Python at all.
- A disabled store's links keep working until they expire: at most
  PHOTO_SYNC_HO_SIGNED_LINK_TTL seconds after the listing that made them.
"""

from __future__ import annotations

import base64
import hashlib
import time

from photo_sync import protocol

# Seconds the S3 presign inside a link outlives the link (clock skew between HO and S3).
PRESIGN_MARGIN = 300


def mac(secret: str, store_id: str, expires: int, signed_path: str) -> str:
    """The link's mac as nginx's secure_link_md5 computes it (base64url, no padding)."""
    digest = hashlib.md5(f"{expires}{store_id}{signed_path} {secret}".encode(),
                         usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class LinkSigner:
    """Signs the links of one listing page: one expiry for the page, one link per photo."""

    def __init__(self, storage, secret: str, ttl: int, store_id: str,
                 now: float | None = None):
        self._storage = storage
        self._secret = secret
        self._store = store_id
        self._ttl = ttl
        self.expires = int(now if now is not None else time.time()) + ttl

    def link(self, row: dict) -> str:
        """The signed link of one live catalog row."""
        sha256 = row["checksum_sha256"] or "-"
        head = f"/{row['checksum']}/{sha256}/{row['version']}"
        presigned = self._storage.presign_path(row["object_key"], self._ttl + PRESIGN_MARGIN)
        signed_path = f"{head}/{self._storage.bucket}/{row['object_key']}"
        code = mac(self._secret, self._store, self.expires, signed_path)
        return f"{protocol.SIGNED_PREFIX}{self._store}/{self.expires}/{code}{head}{presigned}"
