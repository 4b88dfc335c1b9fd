#!/usr/bin/env python3
"""`bench/gateway.py`: the HO gateway (nginx, roles/ho_gateway) against its peers, on loopback.

One catalog and bucket served four ways, all on 127.0.0.1:

  download_gateway    wrk: API download endpoint through the gateway (X-Accel-Redirect:
                      the API answers headers, nginx streams the bytes from S3)
  download_presigned  wrk: presigned URLs pointing at the gateway (no API on the path)
  download_s3         wrk: presigned URLs straight at S3 (the floor)
  download_api        wrk: the API's own download endpoint, bytes through Python (today)
  full_sync_gateway   `photo-sync-edge pull --mode full` through https and the gateway
  full_sync_gateway_presigned  the same with presigned URLs that point at the gateway
  full_sync_api       the same straight at gunicorn, bytes through Python (today)
  rclone              `rclone copy --transfers 8` of the bucket to local disk

and the HO API's CPU seconds per GB delivered (its gunicorn master and workers, read from
/proc before and after each wrk run) for the gateway path vs the through-Python path;
nginx's CPU is recorded beside it, and counted in the gateway full syncs' CPU total.
Every time is a whole process's wall time (bench/run.py's `timed`). Writes
bench/results/gateway.json (or --out); the machine is shared, so the figures are indicative.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from bench import report, run
from bench.common import BENCH, BIN, log, machine_info, tree_cpu_seconds
from bench.run import Bench, _series


SCHEMA = "photo-sync-bench-gateway/1"
TARGETS = {
    "download_gateway_vs_s3": 1.3,
    "download_presigned_vs_s3": 1.3,
    "api_cpu_per_gb_gateway_vs_api": 0.05,
    "full_sync_gateway_vs_rclone": 1.3,
}


def server_cpu(server) -> float:
    """CPU seconds so far of a gunicorn master and its workers (live and reaped)."""
    return tree_cpu_seconds(server.process.pid)


def nginx_cpu(gateway) -> float:
    """CPU seconds so far of the nginx master and its workers."""
    return tree_cpu_seconds(gateway.process.pid)


class GatewayBench(Bench):
    """bench/run.py's services plus two gateways and three gunicorns on one catalog."""

    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        self.gateways: list = []

    def api(self, name: str, env: dict):
        """One more gunicorn on the same catalog and bucket with `env`."""
        server = self.testbed.HOServer(self.root / f"gunicorn-{name}", env,
                                       workers=self.args.ho_workers,
                                       threads=self.args.ho_threads).start()
        self.servers.append(server)
        return server

    def pull_via(self, edge: dict, gateway, name: str) -> dict:
        """A full pull (bench/run.py's `pull`) plus the CPU nginx spent meanwhile."""
        before = nginx_cpu(gateway)
        result = self.pull(edge, "full", name=name)
        result["cpu"]["nginx"] = round(nginx_cpu(gateway) - before, 2)
        result["cpu"]["total"] = round(result["cpu"]["total"] + result["cpu"]["nginx"], 2)
        return result

    def wrk_cpu(self, name: str, base_url: str, paths: list[str], headers: list[str],
                server=None, gateway=None) -> dict:
        """wrk, with the API's (and nginx's) CPU seconds per GB delivered."""
        api_before = server_cpu(server) if server else 0.0
        gw_before = nginx_cpu(gateway) if gateway else 0.0
        result = self.wrk(name, base_url, paths, headers)
        gb = result["bytes"] / 1e9
        if server:
            result["api_cpu_seconds"] = round(server_cpu(server) - api_before, 2)
            result["api_cpu_s_per_gb"] = round(result["api_cpu_seconds"] / gb, 3)
        if gateway:
            result["nginx_cpu_seconds"] = round(nginx_cpu(gateway) - gw_before, 2)
            result["nginx_cpu_s_per_gb"] = round(result["nginx_cpu_seconds"] / gb, 3)
        log(f"wrk {name}: {result['mb_per_s']} MB/s, {result['req_per_s']} req/s, "
            f"API CPU {result.get('api_cpu_s_per_gb', '-')} s/GB")
        return result

    def run(self) -> dict:
        """Every measurement; see the module docstring."""
        from support import gateway as gw_support
        args, m = self.args, self.results["measurements"]
        why = gw_support.nginx_missing()
        if why:
            raise SystemExit(f"bench: {why}")
        self.results.update({
            "schema": SCHEMA, "boundary": run.BOUNDARY, "statistic": "median",
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "photos": args.photos, "reps": args.reps, "machine": machine_info(),
            "ho_server": {"workers": args.ho_workers, "threads": args.ho_threads},
            "gateway": "roles/ho_gateway/templates/nginx.conf.j2 with the role's defaults "
                       "(worker_processes 2), rendered by tests/support/gateway.py",
        })
        self.start_services()
        log(f"generating {args.photos} JPEGs")
        photo_set = self.generate(self.root / "photos", args.photos, seed=args.seed)
        ho = self.make_ho("gw", self.root / "photos")
        self.results["photo_set"] = {k: v for k, v in photo_set.items() if k != "paths"}
        total_mb = photo_set["bytes_total"] / 1e6

        accel_api = self.api("accel", {**ho["env"], "PHOTO_SYNC_HO_ACCEL_REDIRECT": "true",
                                       "PHOTO_SYNC_HO_TRUSTED_PROXIES": "1"})
        gateway = gw_support.Gateway(self.root / "gateway", [f"127.0.0.1:{accel_api.port}"],
                                     self.s3.endpoint, ho["bucket"]).start()
        self.gateways.append(gateway)
        presign_gw = gw_support.Gateway(self.root / "gateway-presigned", [], self.s3.endpoint,
                                        ho["bucket"], tls=gateway.tls)
        presign_api = self.api("presigned", {
            **ho["env"], "PHOTO_SYNC_HO_PRESIGNED_DOWNLOADS": "true",
            "PHOTO_SYNC_HO_S3_PUBLIC_ENDPOINT": presign_gw.url,
            "PHOTO_SYNC_HO_PRESIGN_TTL": "7200"})
        presign_gw.values["ho_gateway_api_upstreams"] = [f"127.0.0.1:{presign_api.port}"]
        presign_gw.start()
        self.gateways.append(presign_gw)
        ca = {"PHOTO_SYNC_EDGE_CA_BUNDLE": str(gateway.tls.ca_path)}
        ho_gw = {**ho, "url": gateway.url, "server": accel_api}

        ho_pre = {**ho, "url": presign_gw.url, "server": presign_api}
        pre_env = {**ca, "PHOTO_SYNC_EDGE_PRESIGNED_ORIGIN": presign_gw.url}

        full_gw, full_pre, full_api, rcl = [], [], [], []
        for rep in range(args.reps):
            full_gw.append(self.pull_via(self.make_edge(ho_gw, f"gw_{rep}", ca), gateway,
                                         "pull_full_gateway"))
            assert full_gw[-1]["summary"]["downloaded"] == args.photos, full_gw[-1]
            full_pre.append(self.pull_via(self.make_edge(ho_pre, f"pre_{rep}", pre_env),
                                          presign_gw, "pull_full_gateway_presigned"))
            assert full_pre[-1]["summary"]["downloaded"] == args.photos, full_pre[-1]
            if full_pre[-1]["api_downloads"]:
                raise SystemExit("bench: the presigned sync through the gateway fell back to "
                                 "the API's download endpoint: check the presigned location")
            full_api.append(self.pull(self.make_edge(ho, f"api_{rep}"), "full",
                                      name="pull_full_api"))
            rcl.append(self.rclone(ho, rep))
            assert rcl[-1]["files"] == args.photos, rcl[-1]
            log(f"rep {rep + 1}/{args.reps}: full sync through the gateway "
                f"{full_gw[-1]['seconds']:.2f}s (API served {full_gw[-1]['api_downloads']} "
                f"download headers), presigned through the gateway "
                f"{full_pre[-1]['seconds']:.2f}s, straight at the API "
                f"{full_api[-1]['seconds']:.2f}s, "
                f"rclone {rcl[-1]['seconds']:.2f}s")
        m["full_sync_gateway"] = _series(full_gw, total_mb, args.photos)
        m["full_sync_gateway_presigned"] = _series(full_pre, total_mb, args.photos)
        m["full_sync_api"] = _series(full_api, total_mb, args.photos)
        m["rclone"] = _series(rcl, total_mb, args.photos)

        m["wrk"] = self.measure_gateway_wrk(ho, gateway, accel_api, presign_gw, presign_api)
        self.results["commands"] = dict(self.commands)
        self.results["commands"]["gateway"] = (
            "nginx -c nginx.conf -p DIR -g 'daemon off;' (nginx.conf rendered from "
            "roles/ho_gateway/templates/nginx.conf.j2; wrk goes to https://127.0.0.1:PORT)")
        self.results["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
        self.results["ratios"], self.results["targets"] = evaluate(self.results)
        return self.results

    def measure_gateway_wrk(self, ho, gateway, accel_api, presign_gw, presign_api) -> dict:
        """wrk over the same objects four ways (see the module docstring)."""
        import psycopg
        import requests
        from minio import Minio
        store_id, secret = self.add_store(ho)
        with psycopg.connect(ho["database_url"]) as conn:
            rows = conn.execute("SELECT id::text, object_key FROM product_photo "
                                "WHERE deleted_at IS NULL ORDER BY change_seq").fetchall()
        downloads = [f"/api/v1/sync/product-photos/{pid}/download/" for pid, _ in rows]
        client = Minio(self.s3.endpoint, self.s3.access_key, self.s3.secret_key, secure=False,
                       region="us-east-1")
        s3_paths = [client.presigned_get_object(ho["bucket"], key, expires=dt.timedelta(hours=2))
                    .split(self.s3.endpoint, 1)[1] for _, key in rows]
        session = requests.Session()
        verify = str(gateway.tls.ca_path)
        token = session.post(f"{gateway.url}/api/v1/auth/token/", verify=verify, timeout=10,
                             json={"store_id": store_id, "secret": secret}).json()["access"]
        auth = [f"Authorization: Bearer {token}"]
        presigned = []
        cursor = None
        for _ in range(10 + len(rows) // 100):  # bounded: one page per 100 photos, and spare
            params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = session.get(f"{presign_gw.url}/api/v1/sync/product-photos/", params=params,
                               headers={"Authorization": auth[0].split(": ", 1)[1]},
                               verify=verify, timeout=30).json()
            presigned += [p["download_url"].split(presign_gw.host, 1)[1]
                          for p in page["photos"] if p.get("download_url")]
            cursor = page.get("next_cursor")
            if not page.get("has_more"):
                break
        direct_api = self.servers[0]
        result = {"connections": self.args.wrk_connections, "seconds": self.args.wrk_seconds}
        result["download_s3"] = self.wrk_cpu("download_s3", f"http://{self.s3.endpoint}",
                                             s3_paths, [])
        result["download_gateway"] = self.wrk_cpu("download_gateway", gateway.url, downloads,
                                                  auth, server=accel_api, gateway=gateway)
        result["download_presigned"] = self.wrk_cpu("download_presigned", presign_gw.url,
                                                    presigned, [], server=presign_api,
                                                    gateway=presign_gw)
        result["download_api"] = self.wrk_cpu("download_api", direct_api.url, downloads, auth,
                                              server=direct_api)
        return result

    def close(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        super().close()


def evaluate(results: dict) -> tuple[dict, dict]:
    """The ratios (lower is better) and whether each meets its goal from issue 10."""
    m, w = results["measurements"], results["measurements"]["wrk"]
    ratios = {
        "download_gateway_vs_s3": round(w["download_s3"]["mb_per_s"]
                                        / w["download_gateway"]["mb_per_s"], 2),
        "download_presigned_vs_s3": round(w["download_s3"]["mb_per_s"]
                                          / w["download_presigned"]["mb_per_s"], 2),
        "download_api_vs_s3": round(w["download_s3"]["mb_per_s"]
                                    / w["download_api"]["mb_per_s"], 2),
        "api_cpu_per_gb_gateway_vs_api": round(w["download_gateway"]["api_cpu_s_per_gb"]
                                               / w["download_api"]["api_cpu_s_per_gb"], 3),
        "full_sync_gateway_vs_rclone": round(m["full_sync_gateway"]["median_seconds"]
                                             / m["rclone"]["median_seconds"], 2),
        "full_sync_gateway_presigned_vs_rclone": round(
            m["full_sync_gateway_presigned"]["median_seconds"] / m["rclone"]["median_seconds"], 2),
        "full_sync_api_vs_rclone": round(m["full_sync_api"]["median_seconds"]
                                         / m["rclone"]["median_seconds"], 2),
    }
    targets = {name: {"goal": f"<= {goal}", "value": ratios[name], "met": ratios[name] <= goal}
               for name, goal in TARGETS.items()}
    return ratios, targets


def main(argv: list[str] | None = None) -> int:
    """Run the gateway bench, write gateway.json, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=300, help="photo set size (default 300)")
    parser.add_argument("--reps", type=int, default=1, help="repetitions of the full syncs")
    parser.add_argument("--wrk-seconds", type=int, default=8)
    parser.add_argument("--wrk-connections", type=int, default=8)
    parser.add_argument("--ho-workers", type=int, default=2)
    parser.add_argument("--ho-threads", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args(argv)
    if args.photos < 2 or args.reps < 1:
        parser.error("--photos must be at least 2 and --reps at least 1")
    run.ensure_tools()
    bench = GatewayBench(args)
    try:
        results = bench.run()
    finally:
        bench.close()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gateway.json"
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    log(f"wrote {path}")
    if args.out.resolve() == report.RESULTS_DIR:
        log(f"regenerated {report.write_results_md()}")
    w = results["measurements"]["wrk"]
    for name in ("download_s3", "download_gateway", "download_presigned", "download_api"):
        print(f"{name:20} {w[name]['mb_per_s']:8.1f} MB/s  API CPU "
              f"{w[name].get('api_cpu_s_per_gb', '-')} s/GB")
    for name, target in results["targets"].items():
        print(f"{name:34} {target['value']:7} (goal {target['goal']}: "
              f"{'met' if target['met'] else 'NOT met'})")
    for name, value in results["ratios"].items():
        if name not in results["targets"]:
            print(f"{name:34} {value:7}")
    return 0


if __name__ == "__main__":
    assert BIN  # bench/run.py's venv bin: the CLIs the pulls run
    sys.exit(main())
