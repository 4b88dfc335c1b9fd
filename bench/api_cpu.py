#!/usr/bin/env python3
"""`bench/api_cpu.py`: the HO API's CPU per X-Accel-Redirect download, old code vs new.

Two gunicorns (ACCEL_REDIRECT=true, 1 worker each) on one catalog and bucket, on loopback:
one runs `src/` of --before (a git revision, exported to a temporary folder), the other this
checkout's `src/`. Rounds alternate between them; each round is N sequential downloads on
one keep-alive session, and the CPU of the gunicorn master and worker is read from /proc
before and after. Prints ms of API CPU per download per round and the medians.
`--profile` instead runs N downloads through Flask's test client under cProfile (this
checkout's code) and prints the top functions. The machine is shared: figures are indicative.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import requests

from photo_sync.protocol import API_PREFIX

from bench.common import REPO, testbed
from bench.gateway import server_cpu  # gunicorn master + workers


def export_src(rev: str, dest: Path) -> Path:
    """`src/` of git revision `rev` unpacked under `dest` (no worktree, no checkout)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "src.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), rev, "src"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def ho_cli(env: dict, *args: str) -> str:
    """photo-sync-ho with `env` (this checkout's code)."""
    return subprocess.run([str(Path(sys.executable).parent / "photo-sync-ho"), *args],
                          env={**os.environ, **env}, check=True, capture_output=True,
                          text=True, timeout=300).stdout


def setup(root: Path, photos: int):
    """PostgreSQL, S3, a catalog with `photos` photos and one store: (pg, s3, env, store)."""
    pg = testbed.PostgresCluster(root / "pg").start()
    s3 = testbed.SeaweedS3(root / "s3").start()
    env = testbed.ho_environment(pg.create_db("ho_cpu"), s3, bucket="photos-cpu")
    env["PYTHONPATH"] = f"{REPO / 'src'}{os.pathsep}{REPO / 'tests'}"
    ho_cli(env, "init-db")
    folder = root / "photos"
    testbed.make_photo_set(folder, photos, seed=7, min_kb=5, max_kb=20, mean_kb=10)
    ho_cli(env, "import", str(folder))
    store_id = str(uuid.uuid4())
    secret = ho_cli(env, "store", "add", store_id, "--name", "bench").split()[-1]
    return pg, s3, env, (store_id, secret)


def photo_ids(url: str, token: str) -> list[str]:
    """Every live photo id of the catalog (one listing page is enough for the bench)."""
    r = requests.get(f"{url}{API_PREFIX}/sync/product-photos/", params={"limit": 500},
                     headers={"Authorization": f"Bearer {token}"}, timeout=30)
    r.raise_for_status()
    return [p["id"] for p in r.json()["photos"] if not p["deleted"]]


def token_for(url: str, store: tuple[str, str]) -> str:
    """A bearer token from the API at `url`."""
    r = requests.post(f"{url}{API_PREFIX}/auth/token/", timeout=30,
                      json={"store_id": store[0], "secret": store[1]})
    r.raise_for_status()
    return r.json()["access"]


def round_cpu(server, token: str, ids: list[str], n: int) -> float:
    """ms of API CPU per download over `n` sequential X-Accel downloads."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    before = server_cpu(server)
    for i in range(n):
        r = session.get(f"{server.url}{API_PREFIX}/sync/product-photos/{ids[i % len(ids)]}"
                        "/download/", timeout=30)
        if r.status_code != 200 or "X-Accel-Redirect" not in r.headers:
            raise SystemExit(f"bench: download answered {r.status_code} without X-Accel")
    return (server_cpu(server) - before) * 1000 / n


def compare(args, root: Path, env: dict, store) -> None:
    """Alternating rounds against the --before code and this checkout's code."""
    old_src = export_src(args.before, root / "before")
    accel = {**env, "PHOTO_SYNC_HO_ACCEL_REDIRECT": "true"}
    servers = {
        "before": testbed.HOServer(root / "gu-before", {**accel, "PYTHONPATH": str(old_src)},
                                   workers=1, threads=4),
        "after": testbed.HOServer(root / "gu-after", accel, workers=1, threads=4),
    }
    try:
        for server in servers.values():
            server.start()
        tokens = {name: token_for(s.url, store) for name, s in servers.items()}
        ids = photo_ids(servers["after"].url, tokens["after"])
        for name, server in servers.items():  # warm up: imports, pool, first presign
            round_cpu(server, tokens[name], ids, 50)
        results: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(args.rounds):
            for name, server in servers.items():
                results[name].append(round_cpu(server, tokens[name], ids, args.n))
        for name, values in results.items():
            shown = ", ".join(f"{v:.2f}" for v in values)
            print(f"{name:6} ms CPU/download: median {statistics.median(values):.2f} "
                  f"[{shown}]")
        ratio = statistics.median(results["after"]) / statistics.median(results["before"])
        print(f"after/before: {ratio:.2f} (N={args.n} x {args.rounds} rounds, before="
              f"{args.before})")
    finally:
        for server in servers.values():
            server.stop()


def profile(args, env: dict, store) -> None:
    """cProfile of N X-Accel downloads through Flask's test client (this checkout's code)."""
    os.environ.update(env)
    from photo_sync.ho.app import create_app
    app = create_app({"ACCEL_REDIRECT": "true"})
    client = app.test_client()
    r = client.post(f"{API_PREFIX}/auth/token/", json={"store_id": store[0],
                                                         "secret": store[1]})
    headers = {"Authorization": f"Bearer {r.get_json()['access']}"}
    listing = client.get(f"{API_PREFIX}/sync/product-photos/?limit=500", headers=headers)
    ids = [p["id"] for p in listing.get_json()["photos"]]
    paths = [f"{API_PREFIX}/sync/product-photos/{i}/download/" for i in ids]
    for path in paths[:20]:
        client.get(path, headers=headers)
    prof = cProfile.Profile()
    prof.enable()
    for i in range(args.n):
        client.get(paths[i % len(paths)], headers=headers)
    prof.disable()
    stats = pstats.Stats(prof)
    print(f"total {stats.total_tt * 1000 / args.n:.3f} ms/download under cProfile")
    stats.sort_stats("cumulative").print_stats(35)


def main() -> None:
    """Parse the arguments and run the comparison (or the profile)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="downloads per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--photos", type=int, default=50)
    parser.add_argument("--before", default="main", help="git revision of the old code")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    root = testbed.tempdir("photo-sync-api-cpu-")
    pg, s3, env, store = setup(root, args.photos)
    try:
        if args.profile:
            profile(args, env, store)
        else:
            compare(args, root, env, store)
    finally:
        s3.stop()
        pg.stop("immediate")
        subprocess.run(["rm", "-rf", str(root)], check=False)


if __name__ == "__main__":
    main()
