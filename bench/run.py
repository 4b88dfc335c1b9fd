#!/usr/bin/env python3
"""`make bench`: photo-sync against its peers, on this machine, in one run.

Sets up PostgreSQL (HO catalog + edge databases), SeaweedFS (S3) and the HO
API under gunicorn on 127.0.0.1, generates a photo set, and measures (each
`--reps` times; medians):

  full_sync          `photo-sync-edge pull --mode full` into an empty edge DB (+ peak RSS)
  full_sync_presigned  the same, bytes from presigned S3 URLs (PHOTO_SYNC_EDGE_PRESIGNED_ORIGIN)
  rclone             `rclone copy --transfers 8` of the same bucket to local disk
  baseline           the original design's plan (bench/baseline.py), on a subset, per photo
  practical          parallel S3 GETs + binary COPY, no API (bench/practical.py)
  incremental_nochange / incremental_nochange_large   nothing changed, N and --large-photos
  cli_startup        `photo-sync-edge --help`: start-up and imports, the floor under any pull
                     (3 runs per repetition: cheap, and sensitive to CPU contention)
  full_sync_large    full sync of the large set (peak RSS)
  incremental_1pct   incremental after 1% of the photos changed
  wrk                HO API list pages and downloads vs direct (presigned) S3 GETs

One boundary for every party: each figure is the wall time of the whole process,
from spawning the command to reaping it (`timed`), start-up included; rates are
counts over that time. Nothing is timed from inside a process.

Writes photos-N.json and photos-N.png to --out (default bench/results) and, when
that is bench/results, regenerates bench/RESULTS.md (bench/report.py). rclone and
wrk come from scripts/bootstrap.sh (`make bench` runs it first).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path

from bench import report
from bench.common import (BENCH, BIN, Services, api_downloads, loadavg, log, machine_info,
                          median, public_argv, timed)

BOUNDARY = ("whole process: wall time from spawning the command to reaping it, start-up "
            "included, for every party; rates are counts over that time")

# Tools -----------------------------------------------------------------------------------

def ensure_tools() -> None:
    """Stop with the fix when a peer tool is missing (scripts/bootstrap.sh installs them)."""
    missing = [tool for tool in ("rclone", "wrk") if not shutil.which(tool)]
    if missing:
        raise SystemExit(f"bench: {', '.join(missing)} not found: run scripts/bootstrap.sh "
                         f"(as root; it installs them with apt-get), then run the bench again")


# Processes -------------------------------------------------------------------------------

class Bench:
    """One bench run: the services it starts, the measurements it takes, their commands."""

    def __init__(self, args: argparse.Namespace):
        from bench.common import testbed
        self.args = args
        self.testbed = testbed
        self.root = testbed.tempdir("photo-sync-bench-")
        self.services = Services(self.root)
        self.pg = self.s3 = None
        self.servers: list = []
        self.commands: dict[str, str] = {}
        self.results: dict = {"measurements": {}}

    # Setup ------------------------------------------------------------------------------

    def start_services(self, pg_class=None) -> None:
        self.services.start(pg_class)
        self.pg, self.s3 = self.services.pg, self.services.s3

    def ho_cli(self, env: dict, *args: str) -> str:
        return timed([str(BIN / "photo-sync-ho"), *args], env={**os.environ, **env})["stdout"]

    def make_ho(self, name: str, photo_dir: Path) -> dict:
        url = self.pg.create_db(f"ho_{name}")
        env = self.testbed.ho_environment(url, self.s3, bucket=f"bench-{name}")
        self.ho_cli(env, "init-db")
        started = time.perf_counter()
        self.ho_cli(env, "import", str(photo_dir))
        import_seconds = time.perf_counter() - started
        server = self.testbed.HOServer(self.root / f"gunicorn-{name}", env,
                                       workers=self.args.ho_workers,
                                       threads=self.args.ho_threads).start()
        self.servers.append(server)
        return {"name": name, "env": env, "server": server, "url": server.url,
                "bucket": env["PHOTO_SYNC_HO_S3_BUCKET"], "database_url": url,
                "import_seconds": round(import_seconds, 2), "photo_dir": photo_dir}

    def add_store(self, ho: dict) -> tuple[str, str]:
        store_id = str(uuid.uuid4())
        out = self.ho_cli(ho["env"], "store", "add", store_id, "--name", "bench")
        return store_id, out.split()[-1]

    def make_edge(self, ho: dict, name: str, extra_env: dict | None = None) -> dict:
        """A new store at `ho` with its own empty, migrated edge database."""
        store_id, secret = self.add_store(ho)
        url = self.pg.create_db(f"edge_{name}")
        env = {"PHOTO_SYNC_EDGE_DATABASE_URL": url, "PHOTO_SYNC_EDGE_HO_URL": ho["url"],
               "PHOTO_SYNC_EDGE_STORE_ID": store_id, "PHOTO_SYNC_EDGE_STORE_SECRET": secret,
               **(extra_env or {})}
        timed([str(BIN / "photo-sync-edge"), "schema", "apply"], env={**os.environ, **env})
        return {"env": env, "store_id": store_id, "secret": secret, "database_url": url,
                "ho_server": ho["server"]}

    def generate(self, folder: Path, count: int, seed: int, **sizes) -> dict:
        started = time.perf_counter()
        paths = self.testbed.make_photo_set(folder, count, seed=seed, **sizes)
        seconds = time.perf_counter() - started
        sizes_kb = [p.stat().st_size / 1024 for p in paths]
        return {"count": count, "bytes_total": int(sum(sizes_kb) * 1024),
                "mean_kb": round(statistics.mean(sizes_kb), 1),
                "median_kb": round(statistics.median(sizes_kb), 1),
                "min_kb": round(min(sizes_kb), 1), "max_kb": round(max(sizes_kb), 1),
                "generate_seconds": round(seconds, 2), "paths": paths}

    # CPU accounting ---------------------------------------------------------------------

    def service_cpu(self) -> dict:
        """CPU seconds used so far by each service (live processes plus reaped children)."""
        from bench.common import tree_cpu_seconds as tree
        postmaster = int((self.pg.data / "postmaster.pid").read_text().split()[0])
        live = [s.process.pid for s in self.servers if s.process.poll() is None]
        return {"ho_api": sum(tree(pid) for pid in live),
                "s3": tree(self.s3.process.pid), "postgres": tree(postmaster)}

    def measured(self, cmd: list[str], env: dict | None = None) -> dict:
        """timed(), plus the CPU every party spent meanwhile and the load average before."""
        load = loadavg()
        before = self.service_cpu()
        run = timed(cmd, env=env)
        after = self.service_cpu()
        cpu = {"client": run["cpu_seconds"],
               **{k: round(after[k] - before[k], 2) for k in after}}
        cpu["total"] = round(sum(cpu.values()), 2)
        run["cpu"], run["loadavg_before"] = cpu, load
        return run

    # Measurements -----------------------------------------------------------------------

    def pull(self, edge: dict, mode: str, name: str | None = None) -> dict:
        """One `photo-sync-edge pull`, timed as a whole process, with its HO download count."""
        cmd = [str(BIN / "photo-sync-edge"), "pull", "--mode", mode, "--json"]
        settings = ", ".join(sorted(edge["env"]))
        self.commands.setdefault(name or f"pull_{mode}",
                                 " ".join(["photo-sync-edge", *cmd[1:]]) +
                                 f"   (env {settings}; defaults otherwise: concurrency 8)")
        log_before = api_downloads(edge["ho_server"])
        run = self.measured(cmd, env={**os.environ, **edge["env"]})
        summary = json.loads(run["stdout"])
        if summary["status"] != "ok":
            raise SystemExit(f"bench: pull --mode {mode} ended {summary['status']}: {summary}")
        # Counts only: the summary's own `duration` is timed inside the process, and every
        # time in the results is the whole process's (one boundary for every party).
        keep = ("downloaded", "unchanged", "updated", "deleted", "failed", "bytes", "listed",
                "reported")
        return {"seconds": run["seconds"], "max_rss_mb": run["max_rss_mb"], "cpu": run["cpu"],
                "loadavg_before": run["loadavg_before"],
                "api_downloads": api_downloads(edge["ho_server"]) - log_before,
                "summary": {k: summary[k] for k in keep}}

    def rclone(self, ho: dict, rep: int) -> dict:
        """`rclone copy` of the bucket to local disk, timed as a whole process."""
        target = self.root / f"rclone-{rep}"
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        env.update({"RCLONE_CONFIG_BENCHS3_TYPE": "s3", "RCLONE_CONFIG_BENCHS3_PROVIDER":
                    "SeaweedFS", "RCLONE_CONFIG_BENCHS3_ENDPOINT": f"http://{self.s3.endpoint}",
                    "RCLONE_CONFIG_BENCHS3_ACCESS_KEY_ID": self.s3.access_key,
                    "RCLONE_CONFIG_BENCHS3_SECRET_ACCESS_KEY": self.s3.secret_key,
                    "RCLONE_CONFIG_BENCHS3_REGION": "us-east-1",
                    "RCLONE_CONFIG_BENCHS3_FORCE_PATH_STYLE": "true",
                    "RCLONE_CONFIG_BENCHS3_ENV_AUTH": "false"})
        cmd = ["env", "-u", "AWS_CA_BUNDLE", "rclone", "copy", "--transfers", "8",
               f"benchs3:{ho['bucket']}", str(target)]
        self.commands["rclone"] = (" ".join(cmd[:-2]) + " benchs3:BUCKET LOCALDIR   (env "
                                   "RCLONE_CONFIG_BENCHS3_TYPE=s3 _PROVIDER=SeaweedFS _ENDPOINT "
                                   "_ACCESS_KEY_ID _SECRET_ACCESS_KEY _REGION=us-east-1 "
                                   "_FORCE_PATH_STYLE=true _ENV_AUTH=false)")
        run = self.measured(cmd, env=env)
        files = [p for p in target.rglob("*") if p.is_file()]
        nbytes = sum(p.stat().st_size for p in files)
        shutil.rmtree(target)
        return {"seconds": run["seconds"], "max_rss_mb": run["max_rss_mb"], "cpu": run["cpu"],
                "loadavg_before": run["loadavg_before"], "files": len(files), "bytes": nbytes}

    def practical(self, ho: dict, rep: int) -> dict:
        """bench/practical.py into a fresh edge database, timed as a whole process."""
        from bench import practical
        edge_url = self.pg.create_db(f"edge_practical_{rep}")
        timed([str(BIN / "photo-sync-edge"), "schema", "apply"],
              env={**os.environ, "PHOTO_SYNC_EDGE_DATABASE_URL": edge_url})
        cmd = [sys.executable, str(BENCH / "practical.py"), "--ho-database-url",
               ho["database_url"], "--s3-endpoint", self.s3.endpoint,
               f"--access-key={self.s3.access_key}", f"--secret-key={self.s3.secret_key}",
               "--bucket", ho["bucket"],
               "--edge-database-url", edge_url, "--threads", "8"]
        self.commands["practical"] = ("python bench/practical.py --ho-database-url HO_DB "
                                      "--s3-endpoint HOST:PORT --access-key KEY --secret-key "
                                      "SECRET --bucket BUCKET --edge-database-url EMPTY_EDGE_DB "
                                      "--threads 8")
        assert practical  # the module is also what the test imports
        run = self.measured(cmd)
        out = json.loads(run["stdout"])
        # The script's own `seconds` starts after its imports: the whole process's time is
        # the one kept, as for every other party.
        return {"seconds": run["seconds"], "max_rss_mb": run["max_rss_mb"], "cpu": run["cpu"],
                "loadavg_before": run["loadavg_before"], "synced": out["synced"],
                "bytes": out["bytes"]}

    def baseline(self, ho: dict, rep: int, limit: int) -> dict:
        """bench/baseline.py on the first `limit` photos, timed as a whole process."""
        edge = self.make_edge(ho, f"baseline_{rep}")
        from bench import baseline
        cmd = [sys.executable, str(BENCH / "baseline.py"), "--ho-url", ho["url"], "--store-id",
               edge["store_id"], f"--secret={edge['secret']}", "--database-url",
               edge["database_url"], "--limit", str(limit), "--delay", str(baseline.DELAY)]
        self.commands["baseline"] = (f"python bench/baseline.py --ho-url HO_URL --store-id ID "
                                     f"--secret SECRET --database-url EMPTY_EDGE_DB "
                                     f"--limit {limit} --delay {baseline.DELAY}")
        run = self.measured(cmd)
        out = json.loads(run["stdout"])
        if out["failed"] or out["synced"] != limit:
            raise SystemExit(f"bench: baseline synced {out['synced']} of {limit} photos, "
                             f"{out['failed']} failed")
        # Whole process, as for every other party (the script's own `seconds` is not kept).
        return {"seconds": run["seconds"], "max_rss_mb": run["max_rss_mb"], "cpu": run["cpu"],
                "loadavg_before": run["loadavg_before"], "synced": out["synced"],
                "failed": out["failed"], "bytes": out["bytes"],
                "per_photo_seconds": round(run["seconds"] / out["synced"], 5)}

    def wrk(self, name: str, base_url: str, paths: list[str], headers: list[str]) -> dict:
        """One wrk run over `paths`; rates over wrk's whole process, latencies per request."""
        path_file = self.root / f"wrk-{name}.txt"
        path_file.write_text("\n".join(paths) + "\n")
        cmd = ["wrk", "-t", "2", "-c", str(self.args.wrk_connections), "-d",
               f"{self.args.wrk_seconds}s", "-s", str(BENCH / "wrk_cycle.lua")]
        for header in headers:
            cmd += ["-H", header]
        cmd.append(base_url)
        shown = [c if not c.startswith("Authorization") else "Authorization: Bearer TOKEN"
                 for c in cmd]
        shown = [c.replace(str(BENCH), "bench") for c in shown]  # no path of this machine
        self.commands[f"wrk_{name}"] = (" ".join(shown[:-1]) + " " + _redact_url(base_url) +
                                        f"   (env WRK_PATHS=file of {len(paths)} paths)")
        run = self.measured(cmd, env={**os.environ, "WRK_PATHS": str(path_file)})
        line = next(x for x in run["stdout"].splitlines() if x.startswith("WRK_JSON "))
        data = json.loads(line[len("WRK_JSON "):])
        # Rates over wrk's whole process, like every other figure (wrk_cycle.lua does not
        # report wrk's own measuring window, so no second boundary reaches the results).
        seconds = run["seconds"]
        errors = sum(data["errors"].values())
        if data["requests"] == 0 or errors > data["requests"] * 0.01:
            raise SystemExit(f"bench: wrk {name}: {errors} errors in {data['requests']} "
                             f"requests:\n{run['stdout']}")
        return {**data, "seconds": seconds, "cpu": run["cpu"],
                "loadavg_before": run["loadavg_before"],
                "req_per_s": round(data["requests"] / seconds, 1),
                "mb_per_s": round(data["bytes"] / seconds / 1e6, 2),
                "latency_p50_ms": round(data["latency_p50_us"] / 1000, 2),
                "latency_p99_ms": round(data["latency_p99_us"] / 1000, 2)}

    # The run ----------------------------------------------------------------------------

    def run(self) -> dict:
        """Every measurement, in an order that keeps catalog changes after the full syncs."""
        args, m = self.args, self.results["measurements"]
        self.results.update({
            "schema": report.SCHEMA, "boundary": BOUNDARY, "statistic": "median",
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "photos": args.photos, "reps": args.reps, "machine": machine_info(),
            "ho_server": {"workers": args.ho_workers, "threads": args.ho_threads,
                          "config": "gunicorn -c python:photo_sync.ho.gunicorn_conf "
                                    "'photo_sync.ho.app:create_app()' (gthread)"},
            "edge_postgresql": "testbed cluster: fsync=off, synchronous_commit=off, "
                               "full_page_writes=off (rclone's local files are not fsynced "
                               "either)",
        })
        self.start_services()

        log(f"generating {args.photos} JPEGs (50 KB - 1 MB, mean about 200 KB)")
        photo_set = self.generate(self.root / "photos", args.photos, seed=args.seed)
        ho = self.make_ho("main", self.root / "photos")
        photo_set["import_seconds"] = ho["import_seconds"]
        self.results["photo_set"] = {k: v for k, v in photo_set.items() if k != "paths"}
        total_mb = photo_set["bytes_total"] / 1e6
        log(f"photo set: {total_mb:.1f} MB, mean {photo_set['mean_kb']} KB; imported in "
            f"{ho['import_seconds']}s; HO API at {ho['url']}")

        # The same catalog and bucket behind a second HO that offers presigned S3 URLs:
        # the bytes bypass the API (PHOTO_SYNC_HO_PRESIGNED_DOWNLOADS=true). The agent takes
        # them only from the origin it is told is S3's; otherwise it falls back to the API
        # without a word, and the series would measure the API path under another name.
        pre_env = {**ho["env"], "PHOTO_SYNC_HO_PRESIGNED_DOWNLOADS": "true"}
        pre_server = self.testbed.HOServer(self.root / "gunicorn-presigned", pre_env,
                                           workers=self.args.ho_workers,
                                           threads=self.args.ho_threads).start()
        self.servers.append(pre_server)
        ho_pre = {**ho, "env": pre_env, "server": pre_server, "url": pre_server.url}
        pre_edge_env = {"PHOTO_SYNC_EDGE_PRESIGNED_ORIGIN": f"http://{self.s3.endpoint}"}

        # 1, 2, 4 interleaved per repetition so drift hits all three alike.
        full, rcl, prac, incr, pre = [], [], [], [], []
        last_edge = None
        for rep in range(args.reps):
            edge = self.make_edge(ho, f"full_{rep}")
            full.append(self.pull(edge, "full"))
            assert full[-1]["summary"]["downloaded"] == args.photos, full[-1]
            # Cheap and sensitive to CPU contention: several samples per repetition.
            for _ in range(3):
                incr.append(self.pull(edge, "incremental"))
                assert incr[-1]["summary"]["downloaded"] == 0, incr[-1]
            pre.append(self.pull(self.make_edge(ho_pre, f"presigned_{rep}", pre_edge_env),
                                 "full", name="pull_full_presigned"))
            assert pre[-1]["summary"]["downloaded"] == args.photos, pre[-1]
            if pre[-1]["api_downloads"]:
                raise SystemExit(f"bench: the presigned full sync took {pre[-1]['api_downloads']}"
                                 f" photos through the HO API instead of S3: check that the "
                                 f"agent honours {', '.join(pre_edge_env)}")
            rcl.append(self.rclone(ho, rep))
            assert rcl[-1]["files"] == args.photos, rcl[-1]
            prac.append(self.practical(ho, rep))
            log(f"rep {rep + 1}/{args.reps}: full sync {full[-1]['seconds']:.2f}s "
                f"(RSS {full[-1]['max_rss_mb']} MB), presigned {pre[-1]['seconds']:.2f}s, "
                f"incremental {incr[-1]['seconds']:.2f}s, "
                f"rclone {rcl[-1]['seconds']:.2f}s, practical {prac[-1]['seconds']:.2f}s")
            last_edge = edge
        m["full_sync"] = _series(full, total_mb, args.photos)
        m["full_sync_presigned"] = _series(pre, total_mb, args.photos)
        m["incremental_nochange"] = _series(incr)
        # The floor under every pull: the interpreter and the CLI's imports (psycopg,
        # requests), no database or HO. What a no-change incremental spends above it is its
        # own work.
        cmd = [str(BIN / "photo-sync-edge"), "--help"]
        self.commands["cli_startup"] = "photo-sync-edge --help"
        m["cli_startup"] = _series([self.measured(cmd) for _ in range(args.reps * 3)])
        m["rclone"] = _series(rcl, total_mb, args.photos)
        m["practical"] = _series(prac, total_mb, args.photos)

        # 3: the original plan on a subset, scaled per photo.
        limit = min(args.baseline_photos, args.photos)
        base = []
        for rep in range(args.baseline_reps):
            base.append(self.baseline(ho, rep, limit))
            log(f"baseline rep {rep + 1}/{args.baseline_reps}: {limit} photos in "
                f"{base[-1]['seconds']:.2f}s")
        m["baseline"] = _series(base)
        m["baseline"].update({
            "photos_measured": limit,
            "per_photo_seconds": median([r["per_photo_seconds"] for r in base]),
            "scaled_seconds": round(median([r["per_photo_seconds"] for r in base])
                                    * args.photos, 2),
            "note": f"measured on the first {limit} photos, scaled per photo to {args.photos}"})

        # 8: wrk against the API and against S3 directly.
        m["wrk"] = self.measure_wrk(ho, last_edge)

        # 6: 1% changed, then incremental (changes HO's catalog: runs after the rest).
        changed = max(1, args.photos // 100)
        inc1 = []
        rng = random.Random(args.seed + 99)
        for _ in range(args.reps):
            picks = rng.sample(photo_set["paths"], changed)
            for path in picks:
                self.testbed.make_jpeg(path, path.stat().st_size, seed=rng.getrandbits(32))
            self.ho_cli(ho["env"], "import", str(ho["photo_dir"]))
            inc1.append(self.pull(last_edge, "incremental"))
            assert inc1[-1]["summary"]["downloaded"] == changed, inc1[-1]
        m["incremental_1pct"] = _series(inc1)
        m["incremental_1pct"]["changed_photos"] = changed
        log(f"incremental after {changed} changed: {m['incremental_1pct']['median_seconds']}s")

        # 5 and 7 at the large count (small photos).
        large = args.large_photos
        log(f"generating {large} small JPEGs (2-5 KB) for the large-catalog runs")
        large_set = self.generate(self.root / "photos-large", large, seed=args.seed + 1,
                                  min_kb=2, max_kb=5, mean_kb=3)
        hol = self.make_ho("large", self.root / "photos-large")
        large_set["import_seconds"] = hol["import_seconds"]
        self.results["large_set"] = {k: v for k, v in large_set.items() if k != "paths"}
        self.results["large_set"]["note"] = ("small photos (2-5 KB) to keep generation and "
                                             "import fast; RSS from bytes in flight is bounded "
                                             "by the write batch and does not grow with count")
        edge_l = self.make_edge(hol, "large")
        m["full_sync_large"] = _series([self.pull(edge_l, "full")],
                                       large_set["bytes_total"] / 1e6, large)
        log(f"full sync of {large}: {m['full_sync_large']['median_seconds']}s, RSS "
            f"{m['full_sync_large']['peak_rss_mb']} MB")
        m["incremental_nochange_large"] = _series(
            [self.pull(edge_l, "incremental") for _ in range(args.reps * 3)])
        self.results["large_photos"] = large
        self.results["commands"] = self.commands
        self.results["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
        self.results["ratios"], self.results["targets"] = report.evaluate(self.results)
        return self.results

    def measure_wrk(self, ho: dict, edge: dict) -> dict:
        """wrk against the API's list and download endpoints and against S3 directly."""
        import requests
        from minio import Minio
        token = requests.post(f"{ho['url']}/api/v1/auth/token/", timeout=10, json={
            "store_id": edge["store_id"], "secret": edge["secret"]}).json()["access"]
        auth = [f"Authorization: Bearer {token}"]
        import psycopg
        with psycopg.connect(ho["database_url"]) as conn:
            rows = conn.execute("SELECT id::text, object_key FROM product_photo "
                                "WHERE deleted_at IS NULL ORDER BY change_seq").fetchall()
        n = len(rows)
        list_paths = [f"/api/v1/sync/product-photos/?limit=100&offset={o}"
                      for o in range(0, max(1, n - 99), 100)]
        download_paths = [f"/api/v1/sync/product-photos/{pid}/download/" for pid, _ in rows]
        client = Minio(self.s3.endpoint, self.s3.access_key, self.s3.secret_key, secure=False,
                       region="us-east-1")
        s3_paths = []
        for _, key in rows:
            url = client.presigned_get_object(ho["bucket"], key, expires=dt.timedelta(hours=2))
            s3_paths.append(url.split(self.s3.endpoint, 1)[1])
        result = {"connections": self.args.wrk_connections, "seconds": self.args.wrk_seconds}
        result["list"] = self.wrk("list", ho["url"], list_paths, auth)
        result["list"]["photos_per_s"] = round(result["list"]["req_per_s"] * 100, 1)
        result["download_api"] = self.wrk("download_api", ho["url"], download_paths, auth)
        result["download_s3"] = self.wrk("download_s3", f"http://{self.s3.endpoint}", s3_paths,
                                         [])
        for name in ("list", "download_api", "download_s3"):
            r = result[name]
            log(f"wrk {name}: {r['req_per_s']} req/s, {r['mb_per_s']} MB/s, "
                f"p50 {r['latency_p50_ms']} ms")
        return result

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.services.stop()
        if not self.args.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def _redact_url(url: str) -> str:
    return url.split("//", 1)[0] + "//127.0.0.1:PORT"


def _series(runs: list[dict], total_mb: float | None = None, photos: int | None = None) -> dict:
    """A series: its runs, how many, their median time, highest RSS and median CPU."""
    seconds = [r["seconds"] for r in runs]
    out = {"runs": runs, "run_count": len(runs), "median_seconds": median(seconds),
           "peak_rss_mb": max(r["max_rss_mb"] for r in runs)}
    if all("cpu" in r for r in runs):
        out["median_cpu"] = {k: median([r["cpu"][k] for r in runs]) for k in runs[0]["cpu"]}
    if total_mb:
        out["mb_per_s"] = round(total_mb / out["median_seconds"], 1)
    if photos:
        out["photos_per_s"] = round(photos / out["median_seconds"], 1)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.run`: run the bench, write the JSON and plot, regenerate RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, nargs="+", default=[1000],
                        help="photo set sizes, each measured in turn in this one run "
                             "(default 1000; `make bench` gives 300 1000)")
    parser.add_argument("--large-photos", type=int, default=10000,
                        help="catalog size for the large incremental/RSS runs (small photos)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each measurement")
    parser.add_argument("--baseline-photos", type=int, default=200,
                        help="photos the original-plan baseline syncs (scaled per photo)")
    parser.add_argument("--baseline-reps", type=int, default=None,
                        help="baseline repetitions (default: --reps)")
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--wrk-connections", type=int, default=8)
    parser.add_argument("--ho-workers", type=int, default=4,
                        help="gunicorn workers of the bench HO (its config's default on 2 cores)")
    parser.add_argument("--ho-threads", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=BENCH / "results",
                        help="folder for photos-N.json and photos-N.png")
    parser.add_argument("--no-results-md", action="store_true",
                        help="do not regenerate bench/RESULTS.md (only done when --out is "
                             "bench/results)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args(argv)
    if args.baseline_reps is None:
        args.baseline_reps = args.reps
    if min(args.photos) < 2 or args.reps < 1:
        parser.error("--photos must be at least 2 and --reps at least 1")
    ensure_tools()

    # Every size of this invocation names it, so RESULTS.md can say they come from one run.
    invocation = {"command": " ".join(["python -m bench.run", *public_argv(argv)]),
                  "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                  "sizes": list(args.photos)}
    tables = []
    for photos in args.photos:
        one = argparse.Namespace(**{**vars(args), "photos": photos})
        bench = Bench(one)
        try:
            results = bench.run()
        finally:
            bench.close()
        results["invocation"] = invocation
        args.out.mkdir(parents=True, exist_ok=True)
        json_path = args.out / f"photos-{photos}.json"
        json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
        log(f"wrote {json_path}")
        png = report.plot(results, args.out / f"photos-{photos}.png")
        if png:
            log(f"wrote {png}")
        tables.append(report.table(results))
    if args.no_results_md:
        pass
    elif args.out.resolve() == report.RESULTS_DIR:
        log(f"regenerated {report.write_results_md()}")
    else:
        # RESULTS.md is made from bench/results only: a run elsewhere must not rewrite it.
        log(f"bench/RESULTS.md left alone: {args.out} is not bench/results")
    print("\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
