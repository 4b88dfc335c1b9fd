"""A small sampling profiler for the agent (py-spy is not in the venv): runs
`photo-sync-edge ARGS` in this process and samples every thread's stack every
`--interval` ms; prints, per thread kind, where the samples were (innermost frames
of ours or the libraries', and the leaf).

    python bench/profiles/sample.py [--interval 2] -- pull --mode full --json
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
import time

T0 = time.perf_counter()


def main() -> int:
    """Sample the CLI run; print the profile to stderr."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval", type=float, default=2.0, help="ms between samples")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args()
    args = [a for a in opts.args if a != "--"]
    samples: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    totals: collections.Counter = collections.Counter()
    stop = threading.Event()

    def sampler() -> None:
        me = threading.get_ident()
        while not stop.is_set():
            names = {t.ident: t.name.split("_")[0] for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                kind = names.get(ident, "?")
                kind = "main" if kind == "MainThread" else kind
                leaf = f"{frame.f_code.co_name} ({frame.f_code.co_filename.rsplit('/', 1)[-1]})"
                ours = None
                f = frame
                while f is not None:
                    if "photo_sync" in f.f_code.co_filename:
                        ours = (f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:"
                                f"{f.f_code.co_name}:{f.f_lineno}")
                        break
                    f = f.f_back
                samples[kind][f"{ours} <- {leaf}"] += 1
                totals[kind] += 1
            time.sleep(opts.interval / 1000)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    from photo_sync.edge import cli  # imports inside the profile, as a real run has them
    try:
        code = cli.main(args)
    finally:
        stop.set()
        thread.join()
    wall = time.perf_counter() - T0
    out = sys.stderr
    print(f"wall {wall:.2f}s (after interpreter start-up); samples every {opts.interval} ms",
          file=out)
    for kind, counter in sorted(samples.items(), key=lambda kv: -totals[kv[0]]):
        print(f"\n[{kind}] {totals[kind]} samples", file=out)
        for where, n in counter.most_common(opts.top):
            print(f"  {n:6d} {100 * n / totals[kind]:5.1f}%  {where}", file=out)
    return code


if __name__ == "__main__":
    sys.exit(main())
