"""The practical limit of a sync on this machine: no API, no per-photo work beyond MD5.

Metadata straight from the HO catalog, bytes by parallel S3 GETs (MinIO SDK,
8 threads), every photo's MD5 checked against the catalog, and everything
written with one binary `COPY ... FROM STDIN (FORMAT BINARY)` into an empty edge
`product_photo` table in one transaction. This is the floor a sync through
the HO API could approach, not something an edge could run (it needs HO's
database and S3 credentials).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import queue
import threading

import psycopg
import urllib3
from minio import Minio

COLUMNS = ("id", "product_id", "object_key", "filename", "size", "content_type", "checksum",
           "version", "is_primary", "sort_order", "updated_at", "image_binary", "last_sync_at",
           "sync_status")
TYPES = ["uuid", "uuid", "text", "text", "int4", "text", "text", "int4", "bool", "int4",
         "timestamptz", "bytea", "timestamptz", "text"]


def catalog_photos(ho_database_url: str) -> list[tuple]:
    """Every live photo's metadata from the HO catalog, in change order."""
    with psycopg.connect(ho_database_url) as conn:
        return conn.execute(
            "SELECT id, product_id, object_key, filename, size, content_type, checksum, version, "
            "is_primary, sort_order, updated_at FROM product_photo WHERE deleted_at IS NULL "
            "ORDER BY change_seq").fetchall()


def run_practical(ho_database_url: str, s3_endpoint: str, access_key: str, secret_key: str,
                  bucket: str, edge_database_url: str, threads: int = 8) -> dict:
    """Copy every live photo from S3 into the empty edge table; counts and bytes."""
    photos = catalog_photos(ho_database_url)
    http = urllib3.PoolManager(maxsize=threads, retries=urllib3.Retry(total=2))
    client = Minio(s3_endpoint, access_key=access_key, secret_key=secret_key, secure=False,
                   region="us-east-1", http_client=http)
    work: queue.Queue = queue.Queue()
    for photo in photos:
        work.put(photo)
    done: queue.Queue = queue.Queue(maxsize=threads * 4)

    def fetch() -> None:
        while True:
            try:
                photo = work.get_nowait()
            except queue.Empty:
                return
            try:
                response = client.get_object(bucket, photo[2])
                try:
                    data = response.read()
                finally:
                    response.close()
                    response.release_conn()
                if hashlib.md5(data).hexdigest() != photo[6]:
                    raise ValueError(f"MD5 mismatch for {photo[0]}")
                done.put((photo, data))
            except Exception as exc:  # handed to the writer, which raises it
                done.put((photo, exc))

    workers = [threading.Thread(target=fetch, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    nbytes = 0
    with psycopg.connect(edge_database_url) as conn, conn.cursor() as cur:
        stamp = dt.datetime.now(dt.timezone.utc)
        with cur.copy(f"COPY product_photo ({', '.join(COLUMNS)}) FROM STDIN "
                      "(FORMAT BINARY)") as copy:
            copy.set_types(TYPES)
            for _ in photos:
                photo, data = done.get()
                if isinstance(data, Exception):
                    raise data
                nbytes += len(data)
                copy.write_row((*photo[:4], len(data), *photo[5:11], data, stamp, "synced"))
        conn.commit()
    for worker in workers:
        worker.join()
    # No time of its own: bench/run.py times this script's whole process, as every party's.
    return {"synced": len(photos), "bytes": nbytes}


def main() -> None:
    """The command line bench/run.py times: one copy, its counts as JSON on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("ho-database-url", "s3-endpoint", "access-key", "secret-key", "bucket",
                 "edge-database-url"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--threads", type=int, default=8)
    a = parser.parse_args()
    print(json.dumps(run_practical(a.ho_database_url, a.s3_endpoint, a.access_key, a.secret_key,
                                   a.bucket, a.edge_database_url, a.threads)))


if __name__ == "__main__":
    main()
