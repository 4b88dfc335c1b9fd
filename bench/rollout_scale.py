#!/usr/bin/env python3
"""How `ansible-playbook playbooks/rollout.yml` grows with the fleet: 1, 3 and 6 store containers.

By hand, not in CI (issue 12, part 3): it starts systemd containers the way scripts/demo.sh
does (Docker engine and local images from scripts/docker-engine.sh and scripts/base-image.sh),
under their own names (`psync-scale-ho`, `psync-scale-store<i>`, label `photo-sync.scale=1`) on
their own network (`psync-scale`), and removes all of them at the end, also after a failure.
Do not run it beside molecule scenarios on a small machine: both compete for the same cores.

  bench/rollout_scale.py                 # counts 1 3 6, waves as the demo's ([1, "100%"])
  python -m bench.rollout_scale --counts 1 3 6 12 --waves '[1, "10%", "50%", "100%"]'

Once: HO deployed (playbooks/deploy-ho.yml) and a few sample photos imported, every store of
the largest count registered. Then for each count: that many fresh store containers (the
previous count's are removed first, so every store starts empty, as a new store would), and
`ansible-playbook -i INVENTORY playbooks/rollout.yml` timed as a whole process, with
ansible.posix.profile_tasks for the slowest tasks. The HO play is part of every timed run (it
converges with nothing to change); the wall time's growth with the count is the stores' cost.

Writes rollout-scale.json to --out (default bench/results) and regenerates bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
NETWORK = "psync-scale"
LABEL = "photo-sync.scale=1"
HO = "psync-scale-ho"
T0 = time.monotonic()
# profile_tasks' summary lines: "Role : Task name ---------- 12.34s"
PROFILE = re.compile(r"^(?P<task>.+?) -{3,} (?P<seconds>\d+\.\d+)s$")


def log(message: str) -> None:
    """Progress on stdout, with the seconds since the harness started."""
    print(f"[rollout-scale {time.monotonic() - T0:6.1f}s] {message}", flush=True)


def sh(cmd: list[str], check: bool = True, env: dict | None = None,
       timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run a command, capture its output; stop with its tail when it fails and check is set."""
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise SystemExit(f"rollout-scale: {' '.join(cmd[:4])} failed ({result.returncode}):\n"
                         f"{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return result


def store_name(index: int) -> str:
    """The container and inventory name of store `index` (1-based)."""
    return f"psync-scale-store{index}"


def start_container(name: str, image: str) -> None:
    """A systemd container like the demo's (scripts/demo.sh), on the scale network."""
    sh(["docker", "run", "-d", "--name", name, "--hostname", name, "--network", NETWORK,
        "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
        "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
        "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs", "/run", "--tmpfs", "/run/lock", "--stop-signal", "SIGRTMIN+3",
        "--label", LABEL, image, "/lib/systemd/systemd"])


def wait_systemd(names: list[str], timeout: float = 120) -> None:
    """Wait (bounded) until systemd in every container is running or degraded."""
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            state = sh(["docker", "exec", name, "systemctl", "is-system-running"],
                       check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"rollout-scale: systemd in {name} is {state!r} after "
                                 f"{timeout:.0f}s: see `docker logs {name}`")
            time.sleep(1)


def remove(names: list[str]) -> None:
    """Remove these containers, when they exist."""
    if names:
        sh(["docker", "rm", "-f", *names], check=False)


def cleanup() -> None:
    """Every container with this harness's label, and its network."""
    found = sh(["docker", "ps", "-aq", "--filter", f"label={LABEL}"], check=False).stdout.split()
    remove(found)
    sh(["docker", "network", "rm", NETWORK], check=False)


def write_inventory(folder: Path, stores: int) -> Path:
    """An inventory like inventories/demo: its group_vars, this harness's hosts."""
    inv = folder / "inventory"
    shutil.copytree(ROOT / "inventories" / "demo" / "group_vars", inv / "group_vars")
    hosts = {f"{store_name(i)}": {"edge_photo_sync_store_id":
                                  str(uuid.uuid5(uuid.NAMESPACE_DNS, store_name(i)))}
             for i in range(1, stores + 1)}
    lines = ["---", "all:", "  vars:", "    ansible_connection: community.docker.docker",
             "  children:", "    ho:", "      hosts:", f"        {HO}:", "    stores:",
             "      hosts:"]
    for name, host_vars in hosts.items():
        lines.append(f"        {name}:")
        lines += [f"          {k}: {v}" for k, v in host_vars.items()]
    (inv / "hosts.yml").write_text("\n".join(lines) + "\n")
    return inv


def profile(stdout: str, top: int = 12) -> list[dict]:
    """The slowest tasks profile_tasks printed at the end of a run."""
    tasks = []
    for line in stdout.splitlines():
        match = PROFILE.match(line.strip())
        if match:
            tasks.append({"task": match["task"].strip(), "seconds": float(match["seconds"])})
    return sorted(tasks, key=lambda t: -t["seconds"])[:top]


def wave_sizes(stores: int, waves: list) -> list[int]:
    """The batches Ansible's `serial:` makes of `stores` hosts (a number or "N%" each, the
    last one repeated; a percentage is of all the hosts, at least 1)."""
    sizes, left, index = [], stores, 0
    while left > 0:
        wave = str(waves[min(index, len(waves) - 1)])
        size = max(1, stores * int(wave[:-1]) // 100) if wave.endswith("%") else int(wave)
        sizes.append(min(size, left))
        left -= size
        index += 1
    return sizes


def summarise(results: dict, waves: list, argv: list[str]) -> dict:
    """Add what bench/report.py renders: the command, what was timed, each run's waves and
    its time against the one-store run."""
    results["command"] = " ".join(["python -m bench.rollout_scale", *argv])
    results["timed"] = ("ansible-playbook -i INVENTORY playbooks/rollout.yml --limit "
                        "HO,STORES, whole process (the HO play included, converged with "
                        "nothing to change)")
    one = next((r["seconds"] for r in results["runs"] if r["stores"] == 1), None)
    for run in results["runs"]:
        run["waves"] = len(wave_sizes(run["stores"], waves))
        run["vs_one_store"] = round(run["seconds"] / one, 2) if one else None
        run["seconds_per_store"] = round(run["seconds"] / run["stores"], 1)
    return results


def main(argv: list[str] | None = None) -> int:
    """`bench/rollout_scale.py`: time rollout.yml against growing counts of store containers."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument("--waves", default=None,
                        help='photo_sync_rollout_waves as JSON (default: the demo inventory\'s)')
    parser.add_argument("--photos", type=int, default=36, help="sample photos imported at HO")
    parser.add_argument("--image", default=os.environ.get(
        "FLEET_IMAGE", "photo-sync/systemd-fleet:bookworm"))
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--keep", action="store_true",
                        help="leave the containers and the temp folder (remove them later with "
                             "`docker rm -f $(docker ps -aq --filter label=photo-sync.scale=1)`)")
    args = parser.parse_args(argv)
    # A SIGTERM (timeout, Ctrl-C from a supervisor) still removes the containers below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("rollout-scale: terminated"))
    venv_bin = Path(sys.executable).parent
    folder = Path(tempfile.mkdtemp(prefix="photo-sync-rollout-scale-"))
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
           "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "false",
           "PHOTO_SYNC_SECRET_DIR": str(folder / "secrets"), "NO_COLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
           "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "40"}
    extra = ["-e", json.dumps({"photo_sync_rollout_waves": json.loads(args.waves)})] \
        if args.waves else []
    waves = json.loads(args.waves) if args.waves else yaml.safe_load(
        (ROOT / "inventories/demo/group_vars/all/main.yml").read_text())["photo_sync_rollout_waves"]
    results = {"kind": "rollout_scale", "started_at": dt.datetime.now(dt.timezone.utc)
               .isoformat(), "counts": args.counts, "image": args.image,
               "waves": waves,
               "forks": "ansible.cfg's", "runs": []}
    try:
        log("Docker engine and the local systemd images (scripts/base-image.sh)")
        sh([str(ROOT / "scripts" / "base-image.sh")], env=env)
        cleanup()
        sh(["docker", "network", "create", NETWORK])
        inventory = write_inventory(folder, max(args.counts))
        start_container(HO, args.image)
        wait_systemd([HO])
        os.chdir(ROOT)  # ansible.cfg's roles/ and library/ are relative to the repository
        log("HO: playbooks/deploy-ho.yml (not timed)")
        started = time.perf_counter()
        sh(["ansible-playbook", "-i", str(inventory), "playbooks/deploy-ho.yml"], env=env)
        results["deploy_ho_seconds"] = round(time.perf_counter() - started, 1)
        photos = folder / "photos"
        sh([sys.executable, str(ROOT / "scripts" / "demo-photos.py"), str(photos), "--count",
            str(args.photos)], env=env)
        sh(["ansible-playbook", "-i", str(inventory), "playbooks/import-photos.yml",
            "-e", f"photo_dir={photos}"], env=env)
        previous: list[str] = []
        for count in args.counts:
            remove(previous)
            names = [store_name(i) for i in range(1, count + 1)]
            for name in names:
                start_container(name, args.image)
            wait_systemd(names)
            previous = names
            cmd = ["ansible-playbook", "-i", str(inventory), "playbooks/rollout.yml",
                   "--limit", ",".join([HO, *names]), *extra]
            log(f"{count} stores: {' '.join(cmd[:4])} --limit HO,STORES")
            started = time.perf_counter()
            run = sh(cmd, check=False, env=env, timeout=3600)
            seconds = round(time.perf_counter() - started, 1)
            (folder / f"rollout-{count}.log").write_text(run.stdout + run.stderr)
            results["runs"].append({"stores": count, "seconds": seconds, "rc": run.returncode,
                                    "slowest_tasks": profile(run.stdout)})
            log(f"{count} stores: {seconds}s, exit {run.returncode}")
            if run.returncode != 0:
                log(f"rollout failed: see {folder / f'rollout-{count}.log'}")
                break
    finally:
        if not args.keep:
            cleanup()
            shutil.rmtree(folder, ignore_errors=True)
    summarise(results, waves, sys.argv[1:] if argv is None else argv)
    results["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "rollout-scale.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {path}")
    from bench import report  # renders the rollout-scale section
    if args.out.resolve() == report.RESULTS_DIR:
        log(f"regenerated {report.write_results_md()}")
    for run in results["runs"]:
        print(f"{run['stores']:3d} stores, {run['waves']} waves: {run['seconds']:7.1f}s  "
              f"({run['vs_one_store']}x one store, rc {run['rc']})")
    return 0 if all(r["rc"] == 0 for r in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
