"""The original design's edge sync, implemented faithfully as the benchmark baseline.

What the project's original design prescribed for a full sync ("Full Sync (Initial)",
"Performance Tips"; the legacy offset listing of docs/api.md), and nothing cleverer:

- list photos with offset paging, `limit=100`;
- for each photo, one after the other: download it through the HO API, verify
  its MD5, store it in the `BYTEA` column with `sync_status = 'synced'`, commit
  (one transaction per photo), then sleep 100 ms ("Rate limiting: 100ms delay
  between downloads");
- parameters bound psycopg2-style: the client interpolates every value into the
  SQL text, bytes as a hex-escaped `'\\x...'::bytea` literal (psycopg 3's
  ClientCursor does exactly what psycopg2's cursor does);
- report the statuses back to HO at the end, in batches.

One concession in the baseline's favour: it keeps one HTTP session (connection
reuse), where a naive script would open a connection per request.

`limit_photos` stops after that many photos: the harness measures a subset and
scales per photo (the 100 ms sleep makes a full 1,000-photo run take minutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import time

import psycopg
import requests

PAGE = 100
DELAY = 0.1

UPSERT = (
    "INSERT INTO product_photo (id, product_id, object_key, filename, size, content_type, "
    "checksum, version, is_primary, sort_order, updated_at, image_binary, last_sync_at, "
    "sync_status, sync_error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), "
    "'synced', NULL) ON CONFLICT (id) DO UPDATE SET product_id = EXCLUDED.product_id, "
    "object_key = EXCLUDED.object_key, filename = EXCLUDED.filename, size = EXCLUDED.size, "
    "content_type = EXCLUDED.content_type, checksum = EXCLUDED.checksum, "
    "version = EXCLUDED.version, is_primary = EXCLUDED.is_primary, "
    "sort_order = EXCLUDED.sort_order, updated_at = EXCLUDED.updated_at, "
    "image_binary = EXCLUDED.image_binary, last_sync_at = now(), sync_status = 'synced', "
    "sync_error = NULL")


def run_baseline(ho_url: str, store_id: str, secret: str, database_url: str, *,
                 limit_photos: int | None = None, delay: float = DELAY) -> dict:
    """One full sync the original way. Returns counts and bytes.

    No time of its own: bench/run.py times this script's whole process, as every party's.
    """
    api = ho_url.rstrip("/") + "/api/v1"
    http = requests.Session()
    token = http.post(f"{api}/auth/token/", json={"store_id": store_id, "secret": secret},
                      timeout=30)
    token.raise_for_status()
    http.headers["Authorization"] = f"Bearer {token.json()['access']}"
    conn = psycopg.connect(database_url, cursor_factory=psycopg.ClientCursor)
    synced, failed, nbytes, statuses = 0, 0, 0, []
    offset = 0
    try:
        while True:
            page = http.get(f"{api}/sync/product-photos/", timeout=60,
                            params={"store_id": store_id, "limit": PAGE, "offset": offset})
            page.raise_for_status()
            body = page.json()
            for photo in body["photos"]:
                if limit_photos is not None and synced + failed >= limit_photos:
                    break
                if photo.get("deleted"):
                    continue
                response = http.get(f"{api}/sync/product-photos/{photo['id']}/download/",
                                    params={"store_id": store_id}, timeout=60)
                now = dt.datetime.now(dt.timezone.utc).isoformat()
                data = response.content
                checksum = response.headers.get("X-Checksum", "")
                if response.status_code != 200 or hashlib.md5(data).hexdigest() != checksum:
                    failed += 1
                    statuses.append({"photo_id": photo["id"], "status": "failed",
                                     "synced_at": None, "version": photo["version"],
                                     "error": f"HTTP {response.status_code} or bad checksum"})
                else:
                    with conn.cursor() as cur:
                        cur.execute(UPSERT, (
                            photo["id"], photo["product_id"], photo["object_key"],
                            photo["filename"], len(data), photo["content_type"], checksum,
                            int(response.headers.get("X-Version", photo["version"])),
                            photo["is_primary"], photo["sort_order"], photo["updated_at"], data))
                    conn.commit()
                    synced += 1
                    nbytes += len(data)
                    statuses.append({"photo_id": photo["id"], "status": "synced",
                                     "synced_at": now, "version": photo["version"],
                                     "error": None})
                time.sleep(delay)
            if (limit_photos is not None and synced + failed >= limit_photos) \
                    or not body["has_more"]:
                break
            offset = body["next_offset"]
        for start in range(0, len(statuses), 500):
            http.post(f"{api}/sync/product-photos/status/", timeout=60,
                      json={"store_id": store_id,
                            "sync_batch": statuses[start:start + 500]}).raise_for_status()
    finally:
        conn.close()
        http.close()
    return {"synced": synced, "failed": failed, "bytes": nbytes}


def main() -> None:
    """The command line bench/run.py times: one sync, its counts as JSON on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ho-url", required=True)
    parser.add_argument("--store-id", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--delay", type=float, default=DELAY)
    args = parser.parse_args()
    print(json.dumps(run_baseline(args.ho_url, args.store_id, args.secret, args.database_url,
                                  limit_photos=args.limit, delay=args.delay)))


if __name__ == "__main__":
    main()
