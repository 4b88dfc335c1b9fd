"""What the photo mirror's refresh costs after a sync run that changed nothing, the common
case of an hourly incremental timer: the full walk every run took before (every held row
read, every link read; a connection and `Mirror.refresh`), against the agent's refresh now
(`Mirror.refresh_changed` with no changed id: the recorded state is checked, the table is
not read, no connection is opened), and one changed photo for scale.

    python -m bench.mirror_refresh --photos 5000

A real PostgreSQL of the test bed (tests/support/testbed.py) with the edge schema; each
photo is a small distinct blob (the cost measured is the walk, not the bytes). The figure
is the median of --repeat refreshes, wall clock, with the load average beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import time
import uuid

import psycopg

from bench.common import log, testbed, uptime
from photo_sync.edge import schema
from photo_sync.edge.mirror import Mirror

TABLE = "product_photo"


def fill(url: str, photos: int) -> list[uuid.UUID]:
    """`photos` held JPEG rows of 256 distinct bytes each; their ids."""
    ids = [uuid.uuid4() for _ in range(photos)]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {TABLE} (id, product_id, filename, checksum, content_type, "
                      "image_binary, version, sync_status, last_sync_at) FROM STDIN") as copy:
            for n, photo_id in enumerate(ids):
                data = n.to_bytes(8, "big") * 32
                copy.write_row((photo_id, uuid.uuid4(), f"{n}.jpg",
                                hashlib.md5(data).hexdigest(), "image/jpeg", data, 1,
                                "synced", "2026-01-01T00:00:00Z"))
    return ids


def timed(step, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    root = testbed.tempdir("bench-mirror-")
    pg = testbed.PostgresCluster(root / "pg").start()
    try:
        url = pg.create_db("edge")
        schema.ensure(url, TABLE)
        log(f"filling {args.photos} photos")
        ids = fill(url, args.photos)
        mirror = Mirror(root / "mirror", 10**12, 0)

        def connect():
            return psycopg.connect(url, autocommit=True)

        def full_walk():
            # What refresh_after_sync did after every run: a connection, every held row.
            with connect() as conn:
                return mirror.refresh(conn, TABLE)
        first = full_walk()  # the mirror written once
        assert first.linked == args.photos
        log(f"before: {uptime()}")
        old, walked = timed(full_walk, args.repeat)
        mirror.refresh_changed(connect, TABLE, None)  # the agent's record written
        new, skipped = timed(lambda: mirror.refresh_changed(connect, TABLE, set()), args.repeat)
        assert skipped.walk == "none" and skipped.linked == args.photos
        one, changed = timed(lambda: mirror.refresh_changed(connect, TABLE, {ids[0]}),
                             args.repeat)
        assert changed.walk == "changed"
        load = uptime()
        print(f"photos {args.photos}, median of {args.repeat}, on a shared machine")
        print(f"  no-change run, full walk (before):   {old * 1000:8.1f} ms "
              f"({walked.rows_read} rows read)")
        print(f"  no-change run, recorded state (now): {new * 1000:8.1f} ms "
              f"({skipped.rows_read} rows read)")
        print(f"  one changed photo (now):             {one * 1000:8.1f} ms "
              f"({changed.rows_read} rows read)")
        print(f"  uptime: {load}")
    finally:
        pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
