"""Benchmark for issue 11: the cost of `verify`, and the store's photo server against nginx.

    .venv/bin/python -m bench.verify_serve --photos 1000 --small-photos 10000

sets up PostgreSQL, SeaweedFS (S3) and the HO API under gunicorn on 127.0.0.1 (the test
bed), imports the photo set, and measures:

1. `photo-sync-edge pull --mode full` into an empty store, then `photo-sync-edge verify`
   of the same store (goal: verify <= 25% of the full sync), for `--photos` photos of
   about `--photo-kb` KB and, with `--small-photos N`, for N photos of 2-5 KB;
2. wrk (2 threads, `--connections`, `--wrk-seconds`, loopback only) GETs cycling through
   every photo: from the store's photo server (`photo_sync.edge.serve` under gunicorn,
   2 workers x 8 threads) and from nginx serving the same bytes from files on disk, same
   run, same client (goal: >= 0.5x nginx in requests/s); and the photo server's RSS
   (all gunicorn processes) before and after the load (goal: flat);
3. the same wrk run against the store's photo server as the edge role deploys it: nginx
   with the role's site (tests/support/store_server.py renders it) over the photo mirror
   the agent wrote after a sync, gunicorn behind it (goal: >= 0.8x plain nginx in
   requests/s, p99 <= 2x nginx's).

It prints the figures and ratios; `--json PATH` also writes them (bench/results/ only when
asked to record a run). Needs `wrk` and `nginx` (Debian: wrk, nginx-light).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import BENCH, BIN, testbed, timed
WRK_SCRIPT = BENCH / "wrk_cycle.lua"
MEMORY_REQUESTS = 2000
# Until `verify` is wired into photo-sync-edge, the same module run directly.
_VERIFY_ENTRY = ("import argparse, sys\nfrom photo_sync.edge import verify\n"
                 "p = argparse.ArgumentParser()\np.add_argument('--config')\n"
                 "verify.add_parser(p.add_subparsers(dest='command'))\n"
                 "a = p.parse_args(sys.argv[1:])\nsys.exit(a.func(a))\n")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def verify_command() -> list[str]:
    """`photo-sync-edge verify`, or the module itself while the CLI lacks the command."""
    probe = subprocess.run([str(BIN / "photo-sync-edge"), "verify", "--help"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode == 0:
        return [str(BIN / "photo-sync-edge"), "verify", "--json"]
    return [sys.executable, "-c", _VERIFY_ENTRY, "verify", "--json"]


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / ticks


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def wrk(base_url: str, paths_file: Path, connections: int, seconds: int) -> dict:
    cmd = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
           "-s", str(WRK_SCRIPT), base_url]
    started = time.perf_counter()
    result = subprocess.run(cmd, env={**os.environ, "WRK_PATHS": str(paths_file)},
                            capture_output=True, text=True, timeout=seconds + 60)
    # Rates over wrk's whole process, the one boundary bench/run.py uses for every party
    # (wrk_cycle.lua reports no measuring window of its own).
    seconds_run = time.perf_counter() - started
    line = next(x for x in result.stdout.splitlines() if x.startswith("WRK_JSON "))
    data = json.loads(line[len("WRK_JSON "):])
    errors = sum(data["errors"].values())
    if errors:
        raise SystemExit(f"bench: wrk against {base_url}: {errors} errors: {data['errors']}")
    return {"requests": data["requests"], "req_per_s": round(data["requests"] / seconds_run, 1),
            "mb_per_s": round(data["bytes"] / seconds_run / 1e6, 1),
            "p50_ms": round(data["latency_p50_us"] / 1000, 2),
            "p99_ms": round(data["latency_p99_us"] / 1000, 2)}


class Bed:
    """The services for one benchmark run, all under one temporary folder."""

    def __init__(self, root: Path):
        self.tb = testbed
        self.root = root
        self.pg = testbed.PostgresCluster(root / "pg").start()
        self.s3 = testbed.SeaweedS3(root / "s3").start()
        self.stacks: list = []

    def ho(self, name: str, photo_dir: Path) -> dict:
        url = self.pg.create_db(f"ho_{name}")
        env = {**os.environ, **self.tb.ho_environment(url, self.s3, bucket=f"bench-{name}")}
        subprocess.run([str(BIN / "photo-sync-ho"), "init-db"], env=env, check=True,
                       capture_output=True, timeout=120)
        server = self.tb.HOServer(self.root / name, env, workers=2, threads=8).start()
        self.stacks.append(server)
        subprocess.run([str(BIN / "photo-sync-ho"), "import", str(photo_dir)], env=env,
                       check=True, capture_output=True, timeout=3600)
        return {"env": env, "url": server.url, "name": name}

    def edge(self, ho: dict, tag: str) -> dict:
        import uuid
        store_id = str(uuid.uuid4())
        out = subprocess.run([str(BIN / "photo-sync-ho"), "store", "add", store_id],
                             env=ho["env"], check=True, capture_output=True, text=True).stdout
        url = self.pg.create_db(f"edge_{ho['name']}_{tag}")
        env = {**os.environ, "PHOTO_SYNC_EDGE_DATABASE_URL": url,
               "PHOTO_SYNC_EDGE_HO_URL": ho["url"], "PHOTO_SYNC_EDGE_STORE_ID": store_id,
               "PHOTO_SYNC_EDGE_STORE_SECRET": out.split()[-1]}
        subprocess.run([str(BIN / "photo-sync-edge"), "schema", "apply"], env=env, check=True,
                       capture_output=True, timeout=120)
        return env

    def close(self) -> None:
        for server in self.stacks:
            server.stop()
        self.s3.stop()
        self.pg.stop("immediate")


def measure_verify(bed: Bed, name: str, photo_dir: Path, reps: int) -> dict:
    """Full sync into an empty store, then verify of that store; `reps` times each."""
    ho = bed.ho(name, photo_dir)
    sync_times, verify_times = [], []
    env = None
    for rep in range(reps):
        env = bed.edge(ho, f"r{rep}")
        result = timed([str(BIN / "photo-sync-edge"), "pull", "--mode", "full", "--json"],
                       env, check=False)
        summary = json.loads(result["stdout"])
        if result["rc"] != 0 or summary["failed"]:
            raise SystemExit(f"bench: full sync failed: {result['stderr'][-2000:]}")
        sync_times.append(result["seconds"])
        result = timed(verify_command(), env, check=False)
        report = json.loads(result["stdout"])
        if result["rc"] != 0 or not report["matches"]:
            raise SystemExit(f"bench: verify found drift after a clean sync: {report}")
        verify_times.append(result["seconds"])
    sync, ver = sorted(sync_times)[len(sync_times) // 2], sorted(verify_times)[
        len(verify_times) // 2]
    figures = {"photos": summary["listed"], "mb": round(summary["bytes"] / 1e6, 1),
               "full_sync_s": round(sync, 2), "verify_s": round(ver, 2),
               "verify_vs_full_sync": round(ver / sync, 3), "reps": reps}
    log(f"{name}: {figures}")
    return {"figures": figures, "env": env}


def write_nginx_conf(root: Path, port: int, files: Path) -> Path:
    conf = root / "nginx.conf"
    conf.write_text(f"""worker_processes 2;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {root}/client_temp;
    proxy_temp_path {root}/proxy_temp;
    fastcgi_temp_path {root}/fastcgi_temp;
    uwsgi_temp_path {root}/uwsgi_temp;
    scgi_temp_path {root}/scgi_temp;
    server {{
        listen 127.0.0.1:{port};
        location /photos/ {{ root {files}; default_type image/jpeg; etag on; }}
    }}
}}
""")
    return conf


def measure_serve(bed: Bed, edge_env: dict, connections: int, seconds: int) -> dict:
    """The photo server vs nginx, the same photos, the same wrk client."""
    import psycopg
    tb = bed.tb
    files = bed.root / "files"
    (files / "photos").mkdir(parents=True)
    paths = []
    with psycopg.connect(edge_env["PHOTO_SYNC_EDGE_DATABASE_URL"]) as conn:
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT id::text, image_binary FROM product_photo "
                        "WHERE sync_status = 'synced'")
            for photo_id, data in cur:
                (files / "photos" / photo_id).write_bytes(data)
                paths.append(f"/photos/{photo_id}")
    paths_file = bed.root / "wrk-paths.txt"
    paths_file.write_text("\n".join(paths) + "\n")

    serve_port, nginx_port = tb.free_port(), tb.free_port()
    # The photo mirror as the edge role deploys it: written by the agent after a sync.
    mirror = bed.root / "mirror"
    mirror_env = {**edge_env, "PHOTO_SYNC_EDGE_SERVE_CACHE_DIR": str(mirror),
                  "PHOTO_SYNC_EDGE_SERVE_CACHE_MAX_BYTES": str(10**11),
                  "PHOTO_SYNC_EDGE_SERVE_CACHE_MIN_FREE_BYTES": "0"}
    subprocess.run([str(BIN / "photo-sync-edge"), "pull", "--mode", "incremental"],
                   env=mirror_env, check=True, capture_output=True, timeout=600)
    # Workers and threads: the photo server's defaults unless the caller's env sets them.
    serve_env = {"PHOTO_SYNC_EDGE_SERVE_WORKERS": "2", "PHOTO_SYNC_EDGE_SERVE_THREADS": "8",
                 **mirror_env, "PHOTO_SYNC_EDGE_SERVE_BIND": f"127.0.0.1:{serve_port}"}
    from photo_sync.config import Settings
    from photo_sync.edge.serve import gunicorn_argv
    argv = gunicorn_argv(Settings("PHOTO_SYNC_EDGE_", environ=serve_env))
    argv.remove("--access-logfile")
    argv.remove("-")
    server = subprocess.Popen(argv, env=serve_env, stdout=subprocess.DEVNULL,
                              stderr=open(bed.root / "serve.log", "ab"), start_new_session=True)
    conf = write_nginx_conf(bed.root, nginx_port, files)
    nginx = subprocess.Popen(["nginx", "-c", str(conf)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    from support.store_server import StoreNginx
    front = StoreNginx(bed.root / "store-nginx", mirror, f"127.0.0.1:{serve_port}", workers=2)
    import requests
    try:
        serve_url, nginx_url = f"http://127.0.0.1:{serve_port}", f"http://127.0.0.1:{nginx_port}"
        tb.wait_for(lambda: requests.get(serve_url + "/health", timeout=5).ok, 60, "photo server")
        tb.wait_for(lambda: requests.get(nginx_url + paths[0], timeout=5).ok, 30, "nginx")
        front.start()
        # Warm up all three (connections, page cache, worker imports), then measure.
        for url in (serve_url, nginx_url, front.url):
            for path in paths[:50]:
                requests.get(url + path, timeout=10)
        pids = [server.pid, *children(server.pid)]
        nginx_pids = [nginx.pid, *children(nginx.pid)]
        # Memory: RSS of the whole server around a fixed number of requests.
        rss_before = rss_kb(pids)
        with requests.Session() as session:
            for index in range(MEMORY_REQUESTS):
                response = session.get(serve_url + paths[index % len(paths)], timeout=30)
                assert response.status_code == 200
        rss_after = rss_kb(pids)
        result = {"photos": len(paths), "connections": connections, "seconds": seconds,
                  "cache_dir": True,  # the photo server reads the agent's mirror
                  "mirror_photos": len(list((mirror / "ids").iterdir())),
                  "server_rss_mb": {"before": round(rss_before / 1024, 1),
                                    "after": round(rss_after / 1024, 1),
                                    "requests_between": MEMORY_REQUESTS}}
        # Throughput, with the CPU each side spent: on a shared machine the CPU per
        # request moves far less than requests/s.
        parties = (("photo_server", serve_url, pids), ("nginx", nginx_url, nginx_pids),
                   ("store_nginx", front.url, front.pids() + pids))
        for name, url, who in parties:
            cpu = cpu_seconds(who)
            result[name] = wrk(url, paths_file, connections, seconds)
            result[name]["server_cpu_ms_per_request"] = round(
                (cpu_seconds(who) - cpu) * 1000 / max(result[name]["requests"], 1), 3)
        result["rss_after_wrk_mb"] = round(rss_kb(pids) / 1024, 1)
        result["req_per_s_vs_nginx"] = round(result["photo_server"]["req_per_s"]
                                             / result["nginx"]["req_per_s"], 3)
        result["p99_vs_nginx"] = round(result["photo_server"]["p99_ms"]
                                       / max(result["nginx"]["p99_ms"], 0.001), 2)
        result["store_nginx_req_per_s_vs_nginx"] = round(
            result["store_nginx"]["req_per_s"] / result["nginx"]["req_per_s"], 3)
        result["store_nginx_p99_vs_nginx"] = round(
            result["store_nginx"]["p99_ms"] / max(result["nginx"]["p99_ms"], 0.001), 2)
        result["load_average"] = os.getloadavg()[0]
        log(f"serve: {result}")
        return result
    finally:
        front.stop()
        for proc in (server, nginx):
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=1000, help="photos of --photo-kb KB")
    parser.add_argument("--photo-kb", type=int, default=200)
    parser.add_argument("--small-photos", type=int, default=0,
                        help="also verify N photos of 2-5 KB (e.g. 10000)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--note", help="a sentence RESULTS.md shows with the run (e.g. why "
                                       "the small set is smaller than usual)")
    args = parser.parse_args(argv)
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} is missing: apt-get install -y wrk nginx-light")
    root = Path(tempfile.mkdtemp(prefix="photo-sync-bench-ops-"))
    root.chmod(0o755)  # nginx's workers (nobody) read the photo files under it
    bed = Bed(root)
    # The command as run, relative to the checkout (no path of this machine in the JSON).
    shown = [a if not a.startswith("/") else Path(a).name for a in (argv or sys.argv[1:])]
    results: dict = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "command": " ".join(["python -m bench.verify_serve", *shown]),
                     "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    if args.note:
        results["note"] = args.note
    try:
        kb = args.photo_kb
        log(f"generating {args.photos} photos of about {kb} KB")
        photo_dir = root / "photos"
        testbed.make_photo_set(photo_dir, args.photos, seed=7, min_kb=int(kb * 0.9),
                               max_kb=int(kb * 1.1), mean_kb=kb)
        large = measure_verify(bed, "large", photo_dir, args.reps)
        results["verify_large"] = large["figures"]
        if args.small_photos:
            log(f"generating {args.small_photos} photos of 2-5 KB")
            small_dir = root / "small"
            testbed.make_photo_set(small_dir, args.small_photos, seed=8, min_kb=2, max_kb=5,
                                   mean_kb=3)
            results["verify_small"] = measure_verify(bed, "small", small_dir,
                                                     args.reps)["figures"]
        results["serve"] = measure_serve(bed, large["env"], args.connections, args.wrk_seconds)
        # Only a completed run gets these: a failed one writes no JSON at all.
        results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        results["load_after"] = os.getloadavg()[0]
    finally:
        bed.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results, indent=2))
    v, s = results["verify_large"], results["serve"]
    print(f"\nverify {v['photos']} photos ({v['mb']} MB): {v['verify_s']}s vs full sync "
          f"{v['full_sync_s']}s = {v['verify_vs_full_sync']:.0%} (goal <= 25%)")
    if "verify_small" in results:
        w = results["verify_small"]
        print(f"verify {w['photos']} small photos: {w['verify_s']}s vs full sync "
              f"{w['full_sync_s']}s = {w['verify_vs_full_sync']:.0%}")
    print(f"photo server {s['photo_server']['req_per_s']} req/s, p99 "
          f"{s['photo_server']['p99_ms']} ms; nginx {s['nginx']['req_per_s']} req/s, p99 "
          f"{s['nginx']['p99_ms']} ms: {s['req_per_s_vs_nginx']:.2f}x nginx (goal >= 0.5x); "
          f"server CPU per request {s['photo_server']['server_cpu_ms_per_request']} ms vs "
          f"nginx {s['nginx']['server_cpu_ms_per_request']} ms; "
          f"server RSS {s['server_rss_mb']['before']} -> {s['server_rss_mb']['after']} MB over "
          f"{s['server_rss_mb']['requests_between']} requests")
    print(f"store photo server behind nginx {s['store_nginx']['req_per_s']} req/s, p99 "
          f"{s['store_nginx']['p99_ms']} ms: {s['store_nginx_req_per_s_vs_nginx']:.2f}x nginx "
          f"(goal >= 0.8x), p99 {s['store_nginx_p99_vs_nginx']:.2f}x nginx's (goal <= 2x)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        # Written beside and renamed, so a reader never sees half a file.
        partial = args.json.with_name(args.json.name + ".partial")
        partial.write_text(json.dumps(results, indent=2) + "\n")
        partial.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
