"""Set up a bench bed (PostgreSQL, SeaweedFS, HO API with presigned URLs on 127.0.0.1),
import a photo set, and keep it up while the agent is profiled by hand.

    python -m bench.profiles.hold --photos 300 --env-file /tmp/x.env

writes shell `export` lines for one HO (presigned on), a migrated empty edge database per
`--edges`, and rclone's remote; it waits until killed (SIGTERM), then tears everything down.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from bench import run


def main() -> int:
    """Set up, write the env file, hold until SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--edges", type=int, default=12)
    parser.add_argument("--env-file", type=Path, required=True)
    args = parser.parse_args()
    ns = argparse.Namespace(ho_workers=4, ho_threads=8, keep=False)
    bench = run.Bench(ns)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        bench.start_services()
        bench.generate(bench.root / "photos", args.photos, seed=1)
        ho = bench.make_ho("main", bench.root / "photos")
        pre_env = {**ho["env"], "PHOTO_SYNC_HO_PRESIGNED_DOWNLOADS": "true"}
        pre = bench.testbed.HOServer(bench.root / "gunicorn-presigned", pre_env,
                                     workers=4, threads=8).start()
        bench.servers.append(pre)
        ho_pre = {**ho, "env": pre_env, "server": pre, "url": pre.url}
        lines = [f"export S3_ENDPOINT=http://{bench.s3.endpoint}",
                 f"export BUCKET={ho['bucket']}", f"export HO_API={ho['url']}",
                 f"export RCLONE_CONFIG_B_TYPE=s3 RCLONE_CONFIG_B_PROVIDER=SeaweedFS "
                 f"RCLONE_CONFIG_B_ENDPOINT=http://{bench.s3.endpoint} "
                 f"RCLONE_CONFIG_B_ACCESS_KEY_ID={bench.s3.access_key} "
                 f"RCLONE_CONFIG_B_SECRET_ACCESS_KEY={bench.s3.secret_key} "
                 f"RCLONE_CONFIG_B_REGION=us-east-1 RCLONE_CONFIG_B_FORCE_PATH_STYLE=true "
                 f"RCLONE_CONFIG_B_ENV_AUTH=false", f"export ROOT={bench.root}"]
        for i in range(args.edges):
            edge = bench.make_edge(ho_pre, f"e{i}",
                                   {"PHOTO_SYNC_EDGE_PRESIGNED_ORIGIN":
                                    f"http://{bench.s3.endpoint}"})
            lines.append(f"export EDGE{i}='" + " ".join(
                f"{k}={v}" for k, v in edge["env"].items()) + "'")
        args.env_file.write_text("\n".join(lines) + "\n")
        print("ready", flush=True)
        stop.wait()
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
