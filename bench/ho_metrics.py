"""`python -m bench.ho_metrics`: what one scrape of HO's metrics endpoint costs with a large
fleet registered.

A catalog of --photos live photos (a few imported, the rest copies of their rows: the bytes
play no part in a scrape), --stores stores, and a status report of nearly every photo from
every store (most synced, some failed, some never reported), then HO under gunicorn
(1 worker). --scrapes sequential GETs of the metrics endpoint, after one warm-up; prints
the wall time per scrape and the CPU it cost the gunicorn master (which serves the endpoint
and runs the catalog statement) and PostgreSQL. The machine is shared: figures are
indicative; `uptime` is printed with them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time

import psutil
import requests

from bench.common import BIN, Services, compile_package, loadavg, log, testbed, uptime

FILL_SQL = """
INSERT INTO product_photo
SELECT (jsonb_populate_record(p, jsonb_build_object(
           'id', gen_random_uuid(), 'product_id', gen_random_uuid(),
           'object_key', 'bench/' || g, 'is_primary', false))).*
  FROM product_photo p, generate_series(1, %(copies)s) g
 WHERE p.id = (SELECT id FROM product_photo ORDER BY id LIMIT 1);
INSERT INTO sync_store (id, name, secret_hash)
SELECT gen_random_uuid(), 'bench-' || g, 'not-a-hash' FROM generate_series(1, %(stores)s) g;
INSERT INTO photo_sync_status (store_id, photo_id, version, status, reported_at)
SELECT s.id, p.id, p.version, CASE WHEN random() < 0.02 THEN 'failed' ELSE 'synced' END,
       now() - random() * interval '2 hours'
  FROM sync_store s CROSS JOIN product_photo p WHERE random() < 0.97;
ANALYZE;
"""


def cpu(pid: int) -> float:
    """User + system CPU seconds of one process (not its children)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def postgres_cpu(pg) -> float:
    """CPU seconds of the PostgreSQL postmaster's live backends and helpers."""
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for child in psutil.Process(postmaster).children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=2000)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args(argv)
    root = testbed.tempdir("photo-sync-bench-metrics-")
    services = Services(root).start()
    server = None
    try:
        compile_package()
        url = services.pg.create_db("ho_metrics_bench")
        env = testbed.ho_environment(url, services.s3, bucket="metrics-bench")
        run_env = {**os.environ, **env}
        subprocess.run([str(BIN / "photo-sync-ho"), "init-db"], env=run_env, check=True,
                       capture_output=True)
        photos = root / "photos"
        imported = min(5, args.photos)
        testbed.make_photo_set(photos, imported, seed=5, min_kb=2, max_kb=4, mean_kb=3)
        subprocess.run([str(BIN / "photo-sync-ho"), "import", str(photos)], env=run_env,
                       check=True, capture_output=True)
        log(f"filling the catalog: {args.photos} photos, {args.stores} stores, their reports")
        import psycopg
        with psycopg.connect(url, autocommit=True) as conn:
            params = {"copies": args.photos - imported, "stores": args.stores}
            for statement in filter(str.strip, FILL_SQL.split(";\n")):
                conn.execute(statement, params if "%(" in statement else None)
            statuses = conn.execute("SELECT count(*) FROM photo_sync_status").fetchone()[0]
        server = testbed.HOServer(root / "ho", env, workers=1).start()
        requests.get(server.metrics_url, timeout=60).raise_for_status()  # warm-up
        walls, sizes = [], []
        master_before, pg_before = cpu(server.process.pid), postgres_cpu(services.pg)
        for _ in range(args.scrapes):
            started = time.perf_counter()
            response = requests.get(server.metrics_url, timeout=60)
            walls.append(time.perf_counter() - started)
            response.raise_for_status()
            sizes.append(len(response.content))
        master_ms = (cpu(server.process.pid) - master_before) * 1000 / args.scrapes
        pg_ms = (postgres_cpu(services.pg) - pg_before) * 1000 / args.scrapes
        walls_ms = sorted(w * 1000 for w in walls)
        print(f"stores {args.stores}, live photos {args.photos}, status rows {statuses}, "
              f"{args.scrapes} scrapes, {sizes[-1] // 1024} KiB each")
        print(f"wall per scrape: median {statistics.median(walls_ms):.1f} ms, "
              f"max {walls_ms[-1]:.1f} ms")
        print(f"CPU per scrape: gunicorn master {master_ms:.1f} ms, PostgreSQL {pg_ms:.1f} ms")
        # Where it goes: the catalog statement alone, and rendering its figures alone.
        from photo_sync.ho import catalog, metrics
        with catalog.connect(url, autocommit=True) as conn:
            query_ms, figures = [], None
            for _ in range(5):
                started = time.perf_counter()
                figures = metrics.fleet_figures(conn)
                query_ms.append((time.perf_counter() - started) * 1000)
        render_ms = []
        for _ in range(5):
            started = time.perf_counter()
            metrics.catalog_text(figures, True)
            render_ms.append((time.perf_counter() - started) * 1000)
        print(f"of which: catalog statement + rows {statistics.median(query_ms):.1f} ms, "
              f"rendering {statistics.median(render_ms):.1f} ms (medians of 5, in this process)")
        print(f"load average {loadavg():.2f}; {uptime()}")
    finally:
        if server:
            server.stop()
        services.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
