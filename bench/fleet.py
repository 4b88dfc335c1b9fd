#!/usr/bin/env python3
"""`make bench-fleet`: one HO, N stores syncing from it at once, on this machine's loopback.

One PostgreSQL cluster (HO catalog + one database per store), one SeaweedFS, and the HO API
under gunicorn with the role's worker settings (PHOTO_SYNC_HO_WORKERS unset: min(4, 2 x CPUs);
8 threads), behind the HO gateway as the roles deploy it (`--front-door gateway`, the default:
nginx from roles/ho_gateway's template over https; `--front-door direct` has the agents talk
to gunicorn itself). Behind the gateway the photos come through signed links (`--downloads
signed`, the default, as the demo inventory deploys it: the listing signs a /signed/ link per
photo and nginx serves it from S3, no API request per photo) or through the API's download
answering X-Accel-Redirect (`--downloads accel`). One bench-only change to the gateway: its
token limit per client address is raised, because every agent here comes from 127.0.0.1 where
a real fleet's stores each have their own address. Every store is registered at HO with its own
secret by one `photo-sync-ho store set-many` (as the ho_sync_api role does), and every agent is
a separate `photo-sync-edge pull --mode M --json` process started the way the timers start
them: each at a random offset within a compressed window (RandomizedDelaySec).

Scenarios, in this order (each store's database starts empty for `full` and `full_throttled`):

  single_full        one extra store alone, full sync: the "no collapse" baseline
  full               first full sync of the whole fleet
  incremental_1pct   1% of the photos get new bytes (re-imported at HO), every store incremental
  resync_nochange    fleet-wide resync, nothing changed (incremental)
  full_throttled     the first full sync again, one store capped at a WAN-like rate by the
                     agent's own bandwidth cap (PHOTO_SYNC_EDGE_BANDWIDTH_LIMIT)

After each scenario every store is checked, not assumed: its rows against HO's live catalog
(ids, versions, checksums, sync_status) and md5(image_binary) against the checksum, in SQL on
the store's database. A store that fails the check makes the scenario incomplete, and the run
exits 1 after writing its results.

Per scenario: time until every store is complete (first agent spawned to last agent reaped),
the seconds in which any agent ran, aggregate MB/s over those seconds, each store's whole-process
time (slowest against the median), HO CPU seconds (gunicorn master and workers, reaped workers
included) per GB and per store, HO peak RSS (master + workers, sampled), list and download
latency p50/p99 and the 429 and 5xx counts from the access log of HO's front door (nginx's
request time through the gateway, what the stores saw; gunicorn's request time directly).
Nothing is read from inside the agents but their `--json` summary counts.

Writes fleet-N.json to --out (default bench/results) and, when that is bench/results,
regenerates bench/RESULTS.md (bench/report.py renders a fleet section per file).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from bench import report
from bench.common import (BENCH, BIN, compile_package, public_argv, testbed, tree_cpu_seconds,
                          write_json)
SCHEMA = 1
SCENARIOS = ("single_full", "full", "incremental_1pct", "resync_nochange", "full_throttled")
BOUNDARY = ("each store's time is its agent's whole process, spawn to reap; a scenario's time "
            "runs from its first agent spawned to its last agent reaped")
T0 = time.monotonic()
# One access-log line of photo_sync.ho.gunicorn_conf: '%(h)s "%(r)s" %(s)s %(B)s %(M)sms'.
# The gateway's token limit for the bench: every agent shares 127.0.0.1 (see the docstring).
BENCH_TOKEN_RATE, BENCH_TOKEN_BURST = "6000r/m", 1000
ACCESS = re.compile(r'^\S+ "(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) '
                    r'(?P<bytes>\S+) (?P<ms>\d+)ms$')


def log(message: str) -> None:
    """Progress on stdout, with the seconds since the harness started."""
    print(f"[fleet {time.monotonic() - T0:6.1f}s] {message}", flush=True)


def percentile(values: list[float], pct: float) -> float | None:
    """The pct-th percentile (nearest rank) of values, None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def classify(target: str) -> str:
    """Which API call an access-log request target is: list, download, token, status, other."""
    path = target.split("?", 1)[0]
    if path.endswith("/download/") or path.startswith("/signed/"):
        return "download"
    if path.endswith("/sync/product-photos/"):
        return "list"
    if path.endswith("/auth/token/"):
        return "token"
    if path.endswith("/sync/product-photos/status/"):
        return "status"
    return "other"


def access_stats(lines: list[str]) -> dict:
    """Request counts, 429s, 5xx and list/download latency from HO access-log lines."""
    kinds: dict[str, list[int]] = {}
    statuses: dict[str, int] = {}
    for line in lines:
        match = ACCESS.match(line.strip())
        if not match:
            continue  # gunicorn's error log shares the stream
        kind = classify(match["target"])
        kinds.setdefault(kind, []).append(int(match["ms"]))
        statuses[match["status"]] = statuses.get(match["status"], 0) + 1
    out = {"requests": sum(statuses.values()), "by_status": dict(sorted(statuses.items())),
           "http_429": statuses.get("429", 0),
           "http_5xx": sum(n for code, n in statuses.items() if code.startswith("5")),
           "counts": {kind: len(ms) for kind, ms in sorted(kinds.items())}}
    for kind in ("list", "download"):
        ms = kinds.get(kind, [])
        out[kind] = {"count": len(ms), "p50_ms": percentile(ms, 50),
                     "p99_ms": percentile(ms, 99)}
    return out


def api_download_bytes(text: str) -> dict:
    """Download requests and the body bytes gunicorn sent for them, from its access log."""
    count = sent = 0
    for line in text.splitlines():
        match = ACCESS.match(line.strip())
        if match and classify(match["target"]) == "download":
            count += 1
            sent += int(match["bytes"]) if match["bytes"].isdigit() else 0
    return {"count": count, "body_bytes": sent}


def gateway_access_stats(entries: list[dict]) -> dict:
    """access_stats() from the gateway's JSON access log (request_time in seconds)."""
    lines = [f'{e["client"]} "{e["method"]} {e["path"]} HTTP/1.1" {e["status"]} {e["bytes"]} '
             f'{round(float(e["request_time"]) * 1000)}ms' for e in entries]
    return access_stats(lines)


def check_store(database_url: str, live: dict) -> dict:
    """One store against HO's live catalog {id: (version, checksum)}: complete and
    byte-identical, or the reasons it is not (md5 of the bytes computed in the store's SQL)."""
    import psycopg
    try:
        with psycopg.connect(database_url, connect_timeout=10) as conn:
            rows = conn.execute("SELECT id::text, version, checksum, sync_status, "
                                "md5(image_binary) FROM product_photo").fetchall()
    except psycopg.Error as exc:
        return {"complete": False, "reasons": [f"store database: {type(exc).__name__}"],
                "photos": 0}
    held = {r[0]: r[1:] for r in rows}
    reasons = []
    missing = set(live) - set(held)
    extra = set(held) - set(live)
    stale = not_synced = bad_bytes = 0
    for photo_id, (version, checksum) in live.items():
        if photo_id not in held:
            continue
        h_version, h_checksum, status, md5 = held[photo_id]
        if (h_version, h_checksum) != (version, checksum):
            stale += 1
        elif status != "synced":
            not_synced += 1
        elif md5 != checksum:
            bad_bytes += 1
    for count, what in ((len(missing), "missing"), (len(extra), "extra (deleted at HO)"),
                        (stale, "stale version or checksum"), (not_synced, "not synced"),
                        (bad_bytes, "bytes not matching the checksum")):
        if count:
            reasons.append(f"{count} {what}")
    return {"complete": not reasons, "reasons": reasons, "photos": len(held)}


def ho_live(database_url: str) -> dict:
    """{photo_id: (version, checksum)} of HO's live photos, read from the catalog."""
    import psycopg
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT id::text, version, checksum FROM product_photo "
                            "WHERE deleted_at IS NULL").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def _cluster_class(max_connections: int):
    """The test bed's PostgresCluster with room for the fleet's sessions (2 per agent)."""
    class FleetCluster(testbed.PostgresCluster):
        def _run(self, *args):
            # The test bed fixes max_connections=200 on pg_ctl's command line (which beats
            # ALTER SYSTEM); a fleet of 200 agents holds two sessions each.
            args = tuple(str(a).replace("max_connections=200",
                                        f"max_connections={max_connections}") for a in args)
            return super()._run(*args)

    return FleetCluster


class Sampler:
    """HO's peak RSS (gunicorn master + workers, nginx master + workers when in front) and the
    fleet's concurrency, sampled every 0.2 s."""

    def __init__(self, ho_pids: list[int], running: dict):
        self.ho_pids, self.running = ho_pids, running
        self.peak_rss = 0
        self.peak_running = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import psutil
        while not self._stop.is_set():
            rss = 0
            for pid in self.ho_pids:
                try:
                    top = psutil.Process(pid)
                    rss += top.memory_info().rss
                    for child in top.children():
                        try:
                            rss += child.memory_info().rss
                        except psutil.NoSuchProcess:
                            pass
                except psutil.NoSuchProcess:
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_running = max(self.peak_running, len(self.running))
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Fleet:
    """One fleet run: the services, the stores, the scenarios and what each measured."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.testbed = testbed
        self.root = testbed.tempdir("photo-sync-fleet-")
        self.rng = random.Random(args.seed)
        self.pg = self.s3 = self.server = self.gateway = None
        self.stores: list[dict] = []
        self.single: dict | None = None
        self.generation = 0
        self.commands: dict[str, str] = {}

    # Setup ------------------------------------------------------------------------------

    def start(self) -> None:
        """PostgreSQL, SeaweedFS, the photo set imported at HO, and gunicorn."""

        # As pip does for a deployed wheel: no agent pays for compiling photo_sync.
        compile_package()
        log(f"starting PostgreSQL and SeaweedFS under {self.root}")
        cluster = _cluster_class(max(200, 2 * self.args.stores + 100))
        self.pg = cluster(self.root / "pg").start()
        self.s3 = self.testbed.SeaweedS3(self.root / "s3").start()
        a = self.args
        log(f"generating {a.photos} JPEGs ({a.min_kb}-{a.max_kb} KB, mean about {a.mean_kb} KB)")
        self.photo_dir = self.root / "photos"
        self.paths = self.testbed.make_photo_set(self.photo_dir, a.photos, seed=a.seed,
                                                 min_kb=a.min_kb, max_kb=a.max_kb,
                                                 mean_kb=a.mean_kb)
        self.ho_db = self.pg.create_db("ho_fleet")
        self.ho_env = self.testbed.ho_environment(self.ho_db, self.s3, bucket="fleet")
        self.ho_cli("init-db")
        self.ho_cli("import", str(self.photo_dir))
        self.commands["import"] = "photo-sync-ho import PHOTO_DIR"
        # The role leaves PHOTO_SYNC_HO_WORKERS unset unless told (gunicorn_conf: min(4, 2 x
        # CPUs)); the test bed's HOServer always sets it, so pass the same default explicitly.
        from photo_sync.ho.settings import HOSettings
        workers = self.args.ho_workers or HOSettings().worker_count
        api_env = dict(self.ho_env)
        link_secret = ""
        if self.args.front_door == "gateway":
            # As inventories/demo/group_vars/ho_api.yml: the gateway streams the bytes.
            api_env.update({"PHOTO_SYNC_HO_ACCEL_REDIRECT": "true",
                            "PHOTO_SYNC_HO_TRUSTED_PROXIES": "1"})
            if self.args.downloads == "signed":
                link_secret = secrets.token_hex(32)
                api_env["PHOTO_SYNC_HO_SIGNED_LINK_SECRET"] = link_secret
        self.server = self.testbed.HOServer(self.root / "gunicorn", api_env,
                                            workers=workers, threads=self.args.ho_threads).start()
        self.ho_workers = workers
        self.agent_ho_url, self.agent_extra_env = self.server.url, {}
        if self.args.front_door == "gateway":
            from support import gateway as gw_support
            # The role's worker_connections (the test bed's small figure runs out at about
            # 60 agents: each download holds a client, an API and an S3 connection).
            defaults = gw_support.role_defaults()
            self.gateway = gw_support.Gateway(
                self.root / "gateway", [f"127.0.0.1:{self.server.port}"], self.s3.endpoint,
                "fleet", ho_gateway_token_rate=BENCH_TOKEN_RATE,
                ho_gateway_token_burst=BENCH_TOKEN_BURST,
                ho_gateway_signed_link_secret=link_secret,
                ho_gateway_worker_connections=defaults["ho_gateway_worker_connections"]).start()
            self.agent_ho_url = self.gateway.url
            self.agent_extra_env = {"PHOTO_SYNC_EDGE_CA_BUNDLE": str(self.gateway.tls.ca_path)}
            log(f"gateway (roles/ho_gateway's nginx.conf) at {self.gateway.url}")
        log(f"HO API at {self.server.url}: {workers} workers x {self.args.ho_threads} threads")

    def ho_cli(self, *args: str, stdin: str | None = None) -> str:
        """One `photo-sync-ho` command against the fleet's HO; stops the run when it fails."""
        result = subprocess.run([str(BIN / "photo-sync-ho"), *args], input=stdin,
                                env={**os.environ, **self.ho_env}, capture_output=True,
                                text=True, timeout=600)
        if result.returncode != 0:
            raise SystemExit(f"fleet: photo-sync-ho {args[0]} failed ({result.returncode}): "
                             f"{result.stderr[-2000:]}")
        return result.stdout

    def make_stores(self) -> None:
        """N fleet stores and the baseline store, registered and each with an empty database."""
        count = self.args.stores
        stores = [{"index": i, "name": f"fleet-{i:04d}" if i < count else "fleet-single",
                   "store_id": str(uuid.uuid4()), "secret": secrets.token_urlsafe(24),
                   "wrong_secret": False, "throttled": False} for i in range(count + 1)]
        # As the ho_sync_api role registers an inventory's stores: one process, one list.
        log(f"registering {count} + 1 stores at HO (photo-sync-ho store set-many)")
        self.commands["register"] = ("photo-sync-ho store set-many --json   (one JSON list of "
                                     "every store with its own secret, on stdin)")
        listed = [{k: store[k] for k in ("store_id", "name", "secret")} for store in stores]
        created = json.loads(self.ho_cli("store", "set-many", "--json",
                                         stdin=json.dumps(listed)))["created"]
        if len(created) != count + 1:
            raise SystemExit(f"fleet: store set-many created {len(created)} of {count + 1} stores")
        stores, self.single = stores[:count], stores[count]
        for store in stores[:self.args.wrong_secret]:
            # Registered with one secret, configured with another: HO refuses its token, and
            # the check after every scenario must show it incomplete.
            store["wrong_secret"] = True
        self.stores = stores
        self.template = self.pg.create_db("edge_template")
        env = {**os.environ, "PHOTO_SYNC_EDGE_DATABASE_URL": self.template}
        result = subprocess.run([str(BIN / "photo-sync-edge"), "schema", "apply"], env=env,
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise SystemExit(f"fleet: photo-sync-edge schema apply failed: {result.stderr}")
        self.commands["schema"] = ("photo-sync-edge schema apply   (once, into a template "
                                   "database; every store database is a copy of it)")
        self.fresh_databases([*self.stores, self.single])

    def fresh_databases(self, stores: list[dict]) -> None:
        """Give each store a new, empty, migrated database (a copy of the migrated template)."""
        import psycopg
        self.generation += 1
        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            for store in stores:
                old = store.get("database")
                name = f"edge_{self.generation}_{store['index']:04d}"
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE edge_template')
                if old:
                    conn.execute(f'DROP DATABASE IF EXISTS "{old}" WITH (FORCE)')
                store["database"], store["database_url"] = name, self.pg.url(name)

    def agent_env(self, store: dict) -> dict:
        """The store's agent settings, as its EnvironmentFile would hold them."""
        env = {"PHOTO_SYNC_EDGE_DATABASE_URL": store["database_url"],
               "PHOTO_SYNC_EDGE_HO_URL": self.agent_ho_url,
               "PHOTO_SYNC_EDGE_STORE_ID": store["store_id"],
               "PHOTO_SYNC_EDGE_STORE_SECRET": store["secret"], **self.agent_extra_env}
        if store["wrong_secret"]:
            env["PHOTO_SYNC_EDGE_STORE_SECRET"] = "not-" + store["secret"]
        if store["throttled"]:
            env["PHOTO_SYNC_EDGE_BANDWIDTH_LIMIT"] = str(self.args.throttle_bytes)
        return env

    # CPU ---------------------------------------------------------------------------------

    def cpu(self) -> dict:
        """CPU seconds so far of HO (gunicorn master, workers, reaped workers), S3 and PG."""
        tree = tree_cpu_seconds

        postmaster = int((self.pg.data / "postmaster.pid").read_text().split()[0])
        cpu = {"ho_api": tree(self.server.process.pid), "s3": tree(self.s3.process.pid),
               "postgres": tree(postmaster)}
        if self.gateway:
            cpu["gateway"] = tree(self.gateway.process.pid)
        return cpu

    # One scenario ------------------------------------------------------------------------

    def run_agent(self, store: dict, mode: str, start_at: float, running: dict) -> dict:
        """One `photo-sync-edge pull --mode M --json`, spawned at start_at, bounded in time."""
        time.sleep(max(0.0, start_at - time.monotonic()))
        cmd = [str(BIN / "photo-sync-edge"), "pull", "--mode", mode, "--json"]
        out_path = self.root / f"agent-{store['index']}.out"
        err_path = self.root / f"agent-{store['index']}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            started = time.monotonic()
            proc = subprocess.Popen(cmd, env={**os.environ, **self.agent_env(store)},
                                    stdout=out, stderr=err)
            running[store["index"]] = proc.pid
            deadline = started + self.args.run_timeout
            killed = False
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline and not killed:
                    proc.kill()  # our own child, by its pid
                    killed = True
                time.sleep(0.05)
            ended = time.monotonic()
            running.pop(store["index"], None)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout = out_path.read_text(errors="replace")
        summary = json.loads(stdout) if stdout.strip().startswith("{") else None
        result = {"store": store["index"], "started": started, "ended": ended,
                  "seconds": round(ended - started, 3), "rc": proc.returncode,
                  "killed_at_timeout": killed,
                  "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
                  "throttled": store["throttled"], "wrong_secret": store["wrong_secret"]}
        if summary:
            result.update({k: summary.get(k) for k in ("status", "listed", "downloaded",
                                                       "updated", "unchanged", "deleted",
                                                       "failed", "bytes", "reported")})
        else:
            # The agent's own words (it never prints its secret); the last line is the reason.
            lines = err_path.read_text(errors="replace").strip().splitlines()
            result.update({"status": "error", "bytes": 0,
                           "error": lines[-1][-300:] if lines else ""})
        return result

    def scenario(self, name: str, stores: list[dict], mode: str, description: str) -> dict:
        """Start every store's agent over the window, wait for all, check every store."""
        window = self.args.window if len(stores) > 1 else 0.0
        offsets = sorted(self.rng.uniform(0, window) for _ in stores)
        self.rng.shuffle(offsets)
        log(f"{name}: {len(stores)} stores, pull --mode {mode}, spread over {window:.0f}s")
        access_log = self.gateway.access_log if self.gateway else self.server.log_path
        log_offset = access_log.stat().st_size if access_log.exists() else 0
        api_log_offset = self.server.log_path.stat().st_size
        load = round(os.getloadavg()[0], 2)
        running: dict = {}
        cpu_before = self.cpu()
        sampler = Sampler([self.server.process.pid]
                          + ([self.gateway.process.pid] if self.gateway else []), running)
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(len(stores)) as pool:
            futures = [pool.submit(self.run_agent, store, mode, t0 + offset, running)
                       for store, offset in zip(stores, offsets)]
            agents = [f.result() for f in futures]
        sampler.stop()
        cpu_after = self.cpu()
        time.sleep(0.3)  # gunicorn and nginx write the last access lines after the response
        with open(access_log, "rb") as handle:
            handle.seek(log_offset)
            lines = handle.read().decode(errors="replace").splitlines()
        first = min(a["started"] for a in agents)
        last = max(a["ended"] for a in agents)
        active = _union_seconds([(a["started"], a["ended"]) for a in agents])

        live = ho_live(self.ho_db)
        checks = {s["index"]: check_store(s["database_url"], live) for s in stores}
        for agent in agents:
            agent["check"] = checks[agent["store"]]
            agent["offset"] = round(agent.pop("started") - t0, 3)
            agent["ended"] = round(agent["ended"] - t0, 3)
        incomplete = [{"store": i, "reasons": c["reasons"]} for i, c in checks.items()
                      if not c["complete"]]
        complete = not incomplete

        total_bytes = sum(a.get("bytes") or 0 for a in agents)
        cpu = {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_after}
        cpu["agents"] = round(sum(a["cpu_seconds"] for a in agents), 2)
        # HO's own work: the API, and nginx when it is the front door (S3 is reported apart).
        cpu["ho"] = round(cpu["ho_api"] + cpu.get("gateway", 0.0), 2)
        gb = total_bytes / 1e9
        times = [a["seconds"] for a in agents]
        plain = [a["seconds"] for a in agents if not a["throttled"] and not a["wrong_secret"]]
        stats = (gateway_access_stats([json.loads(line) for line in lines if line.strip()])
                 if self.gateway else access_stats(lines))
        with open(self.server.log_path, "rb") as handle:
            handle.seek(api_log_offset)
            api_downloads = api_download_bytes(handle.read().decode(errors="replace"))
        result = {
            "description": description, "mode": mode, "stores": len(stores),
            "window_seconds": window, "loadavg_before": load,
            "checked": {"stores": len(checks), "photos_at_ho": len(live),
                        "how": "per store: ids, versions, checksums and sync_status against "
                               "HO's live catalog, md5(image_binary) against the checksum"},
            "complete": complete, "stores_complete": len(stores) - len(incomplete),
            "incomplete": incomplete,
            "seconds_to_complete": round(last - first, 3) if complete else None,
            "makespan_seconds": round(last - first, 3),
            "active_seconds": round(active, 3),
            "bytes": total_bytes,
            "mb_per_s": round(total_bytes / 1e6 / active, 2) if active else None,
            "store_seconds": _spread(times),
            "store_seconds_unthrottled": _spread(plain),
            "peak_concurrent_agents": sampler.peak_running,
            "cpu_seconds": cpu,
            "ho_cpu_seconds_per_gb": round(cpu["ho"] / gb, 2) if gb >= 0.001 else None,
            "ho_cpu_seconds_per_store": round(cpu["ho"] / len(stores), 3),
            "ho_peak_rss_mb": round(sampler.peak_rss / 2**20, 1),
            "access_log": stats,
            # The download requests and body bytes gunicorn logged: none behind the gateway
            # with signed links (nginx serves them), empty X-Accel answers with accel.
            "api_downloads": api_downloads,
            "agents": agents,
        }
        slow = result["store_seconds"]
        log(f"{name}: {'complete' if complete else f'INCOMPLETE ({len(incomplete)} stores)'}, "
            f"{result['makespan_seconds']}s to the last store, {result['mb_per_s']} MB/s over "
            f"{result['active_seconds']}s active, stores median {slow['median']}s slowest "
            f"{slow['max']}s, HO CPU {cpu['ho']}s, 429s {stats['http_429']}, "
            f"5xx {stats['http_5xx']}")
        return result

    def change_one_percent(self) -> int:
        """New bytes for 1% of the photos (at least one), re-imported at HO; how many."""
        changed = max(1, self.args.photos // 100)
        for path in self.rng.sample(self.paths, changed):
            self.testbed.make_jpeg(path, path.stat().st_size, seed=self.rng.getrandbits(32))
        self.ho_cli("import", str(self.photo_dir))
        return changed

    # The run -----------------------------------------------------------------------------

    def run(self) -> dict:
        """Every scenario asked for, in order; the results document."""
        a = self.args
        results: dict = {
            "schema": SCHEMA, "kind": "fleet", "boundary": BOUNDARY,
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "stores": a.stores, "window_seconds": a.window, "seed": a.seed,
        }
        self.start()
        sizes = [p.stat().st_size for p in self.paths]
        results["photo_set"] = {"count": a.photos, "bytes_total": sum(sizes),
                                "mean_kb": round(statistics.mean(sizes) / 1024, 1),
                                "min_kb": round(min(sizes) / 1024, 1),
                                "max_kb": round(max(sizes) / 1024, 1)}
        results["ho_server"] = {
            "workers": self.ho_workers, "threads": a.ho_threads,
            "front_door": a.front_door,
            "downloads": a.downloads if self.gateway else "api",
            "config": "gunicorn -c python:photo_sync.ho.gunicorn_conf "
                      "'photo_sync.ho.app:create_app()' (gthread)"}
        if self.gateway:
            results["ho_server"]["gateway"] = (
                "roles/ho_gateway/templates/nginx.conf.j2 with the role's defaults (rendered by "
                "tests/support/gateway.py), but ho_gateway_token_rate "
                f"{BENCH_TOKEN_RATE} and ho_gateway_token_burst {BENCH_TOKEN_BURST}: every "
                "agent comes from 127.0.0.1; the API with PHOTO_SYNC_HO_ACCEL_REDIRECT=true"
                + (" and PHOTO_SYNC_HO_SIGNED_LINK_SECRET (signed links)"
                   if a.downloads == "signed" else ""))
        results["edge_postgresql"] = ("one test-bed cluster, one database per store: fsync=off, "
                                      "synchronous_commit=off, full_page_writes=off")
        self.make_stores()
        results["wrong_secret_stores"] = [s["index"] for s in self.stores if s["wrong_secret"]]
        ca = ", _CA_BUNDLE" if self.gateway else ""
        self.commands["agent"] = ("photo-sync-edge pull --mode MODE --json   (env "
                                  "PHOTO_SYNC_EDGE_DATABASE_URL, _HO_URL, _STORE_ID, "
                                  f"_STORE_SECRET{ca}; defaults otherwise), each store at a random "
                                  f"offset within --window {a.window}")
        s: dict = {}
        wanted = a.scenarios
        if "single_full" in wanted:
            s["single_full"] = self.scenario("single_full", [self.single], "full",
                                             "one store alone, full sync into an empty database")
        if "full" in wanted:
            s["full"] = self.scenario("full", self.stores, "full",
                                      "first full sync of the whole fleet, empty databases")
        if "incremental_1pct" in wanted:
            changed = self.change_one_percent()
            s["incremental_1pct"] = self.scenario(
                "incremental_1pct", self.stores, "incremental",
                f"{changed} of {a.photos} photos changed at HO, every store incremental")
            s["incremental_1pct"]["changed_photos"] = changed
        if "resync_nochange" in wanted:
            s["resync_nochange"] = self.scenario("resync_nochange", self.stores, "incremental",
                                                 "fleet-wide resync, nothing changed")
        if "full_throttled" in wanted:
            throttled = next((st for st in self.stores if not st["wrong_secret"]), None)
            if throttled:
                throttled["throttled"] = True
            self.fresh_databases(self.stores)
            s["full_throttled"] = self.scenario(
                "full_throttled", self.stores, "full",
                "first full sync again (empty databases), one store capped at "
                f"{a.throttle_bytes} bytes/s by PHOTO_SYNC_EDGE_BANDWIDTH_LIMIT")
            s["full_throttled"]["throttle_bytes_per_s"] = a.throttle_bytes
            self.commands["throttled_agent"] = (
                f"PHOTO_SYNC_EDGE_BANDWIDTH_LIMIT={a.throttle_bytes} photo-sync-edge pull "
                "--mode full --json   (one store)")
            if throttled:
                throttled["throttled"] = False
        results["scenarios"] = s
        results["commands"] = {**self.commands,
                              "fleet": " ".join(["python -m bench.fleet", *public_argv(None)])}
        results["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
        results["goals"] = report.fleet_goals(results)
        return results

    def close(self) -> None:
        """Stop every service; remove the temp folder unless --keep."""
        for service in (self.gateway, self.server, self.s3):
            if service:
                service.stop()
        if self.pg:
            self.pg.stop("immediate")
        if not self.args.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def _spread(times: list[float]) -> dict:
    """Median, min and max of store times, and the slowest against the median."""
    if not times:
        return {"median": None, "min": None, "max": None, "slowest_vs_median": None}
    med = statistics.median(times)
    return {"median": round(med, 3), "min": round(min(times), 3), "max": round(max(times), 3),
            "slowest_vs_median": round(max(times) / med, 2) if med else None}


def _union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one interval (the time any agent was running)."""
    total, end = 0.0, None
    for lo, hi in sorted(intervals):
        if end is None or lo > end:
            total += hi - lo
            end = hi
        elif hi > end:
            total += hi - end
            end = hi
    return total


def main(argv: list[str] | None = None) -> int:
    """`bench/fleet.py`: run the fleet scenarios, write fleet-N.json, regenerate RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", type=int, default=50, help="stores in the fleet (default 50)")
    parser.add_argument("--photos", type=int, default=200, help="catalog size (default 200)")
    parser.add_argument("--min-kb", type=int, default=50)
    parser.add_argument("--max-kb", type=int, default=200)
    parser.add_argument("--mean-kb", type=int, default=100)
    parser.add_argument("--window", type=float, default=10.0,
                        help="seconds the agents' start times are spread over (the timers' "
                             "RandomizedDelaySec, compressed; default 10)")
    parser.add_argument("--throttle-bytes", type=int, default=1_000_000,
                        help="bandwidth cap of the one throttled store, bytes/s (default 1 MB/s,"
                             " a WAN-like 8 Mbit/s)")
    parser.add_argument("--ho-workers", type=int, default=0,
                        help="gunicorn workers (default: the role's, min(4, 2 x CPUs))")
    parser.add_argument("--ho-threads", type=int, default=8,
                        help="gunicorn threads per worker (default: the role's, 8)")
    parser.add_argument("--front-door", choices=("gateway", "direct"), default="gateway",
                        help="agents reach HO through the gateway (nginx, https; the default, "
                             "as the roles deploy it) or gunicorn directly")
    parser.add_argument("--downloads", choices=("signed", "accel"), default="signed",
                        help="behind the gateway, photos through signed links (the default, as "
                             "the roles deploy it: no API request per photo) or through the "
                             "API's download answering X-Accel-Redirect")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--wrong-secret", type=int, default=0, metavar="K",
                        help="configure K stores with a wrong secret (to see the check fail)")
    parser.add_argument("--run-timeout", type=float, default=900,
                        help="seconds before an agent is killed (default 900)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args(argv)
    if args.stores < 1 or args.photos < 1 or args.wrong_secret > args.stores:
        parser.error("--stores and --photos must be at least 1, --wrong-secret at most --stores")

    fleet = Fleet(args)
    try:
        results = fleet.run()
    finally:
        fleet.close()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"fleet-{args.stores}.json"
    write_json(path, results, one_line=("agents",))  # one line per store
    log(f"wrote {path}")
    if args.out.resolve() == report.RESULTS_DIR:
        log(f"regenerated {report.write_results_md()}")
    print(report.fleet_table(results))
    incomplete = [name for name, sc in results["scenarios"].items() if not sc["complete"]]
    if incomplete:
        print(f"fleet: stores incomplete after {', '.join(incomplete)}: see 'incomplete' in "
              f"{path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
