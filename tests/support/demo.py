"""`make demo-local`: the whole path on this machine, no containers.

Starts a throwaway PostgreSQL, a SeaweedFS S3 server and the HO API under
gunicorn on loopback, imports sample photos at HO, registers a store, migrates
its database, runs a full pull and an incremental one, and reads one photo
back from the store database with its checksum verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from support import testbed

BIN = Path(sys.executable).parent


def _run(env: dict, *cmd: str, show: bool = True) -> subprocess.CompletedProcess:
    if show:
        print(f"$ {' '.join(cmd)}")
    result = subprocess.run([str(BIN / cmd[0]), *cmd[1:]], env={**os.environ, **env},
                            capture_output=True, text=True)
    if result.returncode not in (0, 1):
        sys.exit(f"{cmd[0]} failed ({result.returncode}): {result.stderr}")
    return result


def main() -> int:
    out = Path(os.environ.get("DEMO_OUT", "build/demo")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = testbed.tempdir("photo-sync-demo-")
    pg = s3 = ho = None
    try:
        print("starting PostgreSQL, SeaweedFS S3 and the HO API on 127.0.0.1 ...")
        pg = testbed.PostgresCluster(root / "pg").start()
        s3 = testbed.SeaweedS3(root / "s3").start()
        ho_env = testbed.ho_environment(pg.create_db("ho_catalog"), s3)
        _run(ho_env, "photo-sync-ho", "init-db")
        photos = root / "photos"
        testbed.make_photo_set(photos, 40, seed=2026)
        print(_run(ho_env, "photo-sync-ho", "import", str(photos)).stdout.strip())
        ho = testbed.HOServer(root / "ho", ho_env).start()
        print(f"HO sync API up at {ho.url}/api/v1/ (health: {ho.url}/api/v1/health/)")

        store_id = "5a0c5d2e-0000-4000-8000-000000000001"
        secret = _run(ho_env, "photo-sync-ho", "store", "add", store_id, "--name",
                      "demo-store").stdout.split()[-1]
        edge_env = {"PHOTO_SYNC_EDGE_DATABASE_URL": pg.create_db("store_edge"),
                    "PHOTO_SYNC_EDGE_HO_URL": ho.url, "PHOTO_SYNC_EDGE_STORE_ID": store_id,
                    "PHOTO_SYNC_EDGE_STORE_SECRET": secret}
        print(_run(edge_env, "photo-sync-edge", "schema", "apply").stdout.strip())
        for mode in ("full", "incremental"):
            print(_run(edge_env, "photo-sync-edge", "pull", "--mode", mode).stdout.rstrip())
        status = json.loads(_run(edge_env, "photo-sync-edge", "status", "--json",
                                 show=False).stdout)
        print(f"store holds {status['photos']} photos, {status['bytes_held'] / 1e6:.1f} MB, "
              f"by status {status['counts_by_status']}")

        import psycopg
        with psycopg.connect(edge_env["PHOTO_SYNC_EDGE_DATABASE_URL"]) as conn:
            photo_id, filename, checksum, data = conn.execute(
                "SELECT id, filename, checksum, image_binary FROM product_photo "
                "WHERE is_primary ORDER BY filename LIMIT 1").fetchone()
        data = bytes(data)
        if hashlib.md5(data).hexdigest() != checksum:
            sys.exit(f"photo {photo_id} read back from the store does not match its checksum")
        target = out / filename
        target.write_bytes(data)
        print(f"photo {photo_id} read back from the store database -> {target} "
              f"({len(data)} bytes, MD5 {checksum} verified)")
        print("\nNext: `make demo` rolls the same out to a container fleet with Ansible; "
              "`make test` runs every test.")
        return 0
    finally:
        for service in (ho, s3, pg):
            if service is not None:
                service.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
