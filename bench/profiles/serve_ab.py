"""The photo server against nginx on an edge database that already holds photos (the
serve half of bench/verify_serve.py, without setting up a bed):

    PHOTO_SYNC_EDGE_DATABASE_URL=... python -m bench.profiles.serve_ab --seconds 5 [KEY=VAL...]

KEY=VAL pairs go into the photo server's environment (e.g. PHOTO_SYNC_EDGE_SERVE_WORKERS=3).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench import verify_serve
from bench.common import testbed


class _Bed:
    def __init__(self, root: Path):
        self.tb, self.root = testbed, root


def main() -> int:
    """Run measure_serve once and print its figures as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("env", nargs="*")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="photo-sync-serve-ab-"))
    root.chmod(0o755)  # nginx workers run as nobody
    env = {**os.environ, **dict(kv.split("=", 1) for kv in args.env)}
    try:
        result = verify_serve.measure_serve(_Bed(root), env, args.connections, args.seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
