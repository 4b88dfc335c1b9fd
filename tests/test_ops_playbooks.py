"""The operators' playbooks run for real with `ansible-playbook` on this machine:
`verify.yml` over three "stores" (local connections, each with its own database and
settings, syncing from a live HO under gunicorn), and `monitoring.yml` installing the
alerting rules through promtool. What is asserted is what an operator reads: the table,
the exit code, and the stores' rows."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import assert_edge_matches_ho

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def playbook(name: str, inventory: Path, *args: str) -> subprocess.CompletedProcess:
    """ansible-playbook from the repository root, as the README runs it."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_LOCALHOST_WARNING": "0",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory),
                           str(ROOT / "playbooks" / name), *args],
                          env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)


def table_rows(stdout: str) -> dict[str, list[str]]:
    """{store: [missing, extra, stale, corrupt, result]} from verify.yml's table."""
    rows = {}
    for match in re.finditer(r"^\s*(store-\w) +(\S+) +(\S+) +(\S+) +(\S+) +(\w+)\s*$", stdout,
                             re.M):
        rows[match.group(1)] = list(match.groups()[1:])
    return rows


@pytest.fixture(scope="module")
def fleet(ho_stack, photo_factory, make_edge, tmp_path_factory):
    """HO with 6 photos; store-a and store-b synced from it; store-c pointed at a port
    where no HO answers. An inventory of local connections, one settings folder each."""
    ho = ho_stack("playbooks")
    ho.import_dir(photo_factory(6, seed=11, min_kb=10, max_kb=30, mean_kb=15))
    root = tmp_path_factory.mktemp("ops-playbooks")
    stores, hosts = {}, {}
    for name in ("store-a", "store-b", "store-c"):
        extra = {"ho_url": "http://127.0.0.1:9", "retries": 0, "timeout": 2} \
            if name == "store-c" else {}
        edge = make_edge(ho, **extra)
        if name != "store-c":
            result, _ = edge.pull("full", "--no-report")
            assert result.returncode == 0, result.stderr
        config_dir = root / name
        config_dir.mkdir()
        edge.write_config(config_dir / "edge.env")
        stores[name] = edge
        hosts[name] = {"edge_photo_sync_config_dir": str(config_dir)}
    inventory = root / "hosts.yml"
    inventory.write_text(yaml.safe_dump(local_inventory(hosts)))
    return ho, stores, inventory


def local_inventory(stores: dict, **groups) -> dict:
    """Stores (and other groups) as local connections: this machine's user and the test
    venv stand in for the role's service user and venv."""
    return {"all": {
        "vars": {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "ansible_become": False,
            "edge_photo_sync_user": getpass.getuser(),
            "edge_photo_sync_venv": str(BIN.parent),
            "ho_sync_api_user": getpass.getuser(),
            "ho_sync_api_venv": str(BIN.parent),
        },
        "children": {"stores": {"hosts": stores},
                     **{name: {"hosts": hosts} for name, hosts in groups.items()}}}}


def test_verify_playbook_names_drift_fails_on_request_and_repairs(fleet):
    ho, stores, inventory = fleet
    clean = playbook("verify.yml", inventory)
    assert "photo-sync fleet verify (3 stores, check only)" in clean.stdout, clean.stdout
    rows = table_rows(clean.stdout)
    assert rows["store-a"] == rows["store-b"] == ["0", "0", "0", "0", "ok"], clean.stdout
    # A store that cannot be verified is a row and an error, never silently fine.
    assert rows["store-c"] == ["-", "-", "-", "-", "ERROR"]
    assert re.search(r"store-c: .*cannot reach HO API at http://127\.0\.0\.1:9", clean.stdout)
    assert clean.returncode != 0
    assert stores["store-b"].secret not in clean.stdout + clean.stderr

    damaged = stores["store-b"]
    victim = sorted(damaged.photos())[0]
    with damaged.db() as conn:
        conn.execute("UPDATE product_photo SET image_binary = 'not the photo' WHERE id = %s",
                     (victim,))
    limit = ["--limit", "store-a,store-b"]

    drift = playbook("verify.yml", inventory, *limit)
    assert drift.returncode == 0, "drift alone fails the run only with fail_on_drift"
    assert table_rows(drift.stdout)["store-b"] == ["0", "0", "0", "1", "drift"], drift.stdout
    assert f"store-b corrupt: {victim}" in drift.stdout
    assert "run with -e repair=true" in drift.stdout
    assert damaged.photos()[victim][2] == "synced", "a check-only verify marks nothing"

    failing = playbook("verify.yml", inventory, *limit, "-e", "fail_on_drift=true")
    assert failing.returncode != 0
    assert "store-b differs from HO: corrupt 1" in failing.stdout, failing.stdout
    assert table_rows(failing.stdout)["store-a"][-1] == "ok"

    repair = playbook("verify.yml", inventory, *limit, "-e", "repair=true")
    assert repair.returncode == 0, repair.stdout[-3000:]
    assert "(2 stores, repair)" in repair.stdout
    assert table_rows(repair.stdout)["store-b"] == ["0", "0", "0", "1", "repaired"]
    assert damaged.photos()[victim][2] == "pending"

    result, summary = damaged.pull("incremental", "--no-report")
    assert result.returncode == 0 and summary["downloaded"] == 1, result.stderr
    assert_edge_matches_ho(damaged, ho)
    healed = playbook("verify.yml", inventory, *limit, "-e", "fail_on_drift=true")
    assert healed.returncode == 0, healed.stdout[-3000:]
    assert {r[-1] for r in table_rows(healed.stdout).values()} == {"ok"}


def test_verify_playbook_in_check_mode_never_repairs(fleet):
    _, stores, inventory = fleet
    edge = stores["store-a"]
    victim = sorted(edge.photos())[1]
    with edge.db() as conn:
        conn.execute("UPDATE product_photo SET version = version + 7 WHERE id = %s", (victim,))
    run = playbook("verify.yml", inventory, "--limit", "store-a", "-e", "repair=true",
                   "--check")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "(1 stores, check only)" in run.stdout
    assert table_rows(run.stdout)["store-a"] == ["0", "0", "1", "0", "drift"]
    assert edge.photos()[victim][2] == "synced"


def test_status_playbook_shows_hos_fleet_view_also_with_a_store_unreachable(fleet, tmp_path):
    ho, stores, inventory = fleet
    hosts = yaml.safe_load(inventory.read_text())["all"]["children"]["stores"]["hosts"]
    # A store the controller cannot reach at all: SSH to a loopback port nothing listens on.
    hosts["store-x"] = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1",
                        "ansible_port": 9, "ansible_ssh_common_args": "-o ConnectTimeout=3"}
    ho_dir = tmp_path / "ho"
    ho_dir.mkdir()
    (ho_dir / "ho.env").write_text("".join(f"{k}={v}\n" for k, v in ho.env.items()))
    with_ho = tmp_path / "hosts.yml"
    with_ho.write_text(yaml.safe_dump(local_inventory(
        hosts, ho={"ho-1": {"ho_sync_api_config_dir": str(ho_dir)}})))

    run = playbook("status.yml", with_ho)
    assert "photo-sync fleet status (4 stores)" in run.stdout, run.stdout[-3000:]
    assert re.search(r"store-a +20\d\d-", run.stdout), run.stdout[-3000:]
    assert re.search(r"store-x +ERROR", run.stdout)
    # HO's own view follows the table: every registered store, by id.
    # ...on lines of its own (the first version printed a literal backslash-n before it).
    assert re.search(r"photo-sync-ho fleet:\n +catalog: 6 live photos\n", run.stdout), \
        run.stdout[-3000:]
    for edge in stores.values():
        assert edge.store_id in run.stdout
    assert run.returncode != 0, "an unreachable store still fails the run"

    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(local_inventory(
        hosts, ho={"ho-1": {"ho_sync_api_config_dir": str(tmp_path / "nowhere")}})))
    run = playbook("status.yml", broken, "--limit", "store-a,ho-1")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "the HO fleet view is not available from ho-1" in run.stdout, run.stdout[-4000:]


# monitoring.yml -------------------------------------------------------------------------

@pytest.fixture
def prometheus_host(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"prometheus": {"hosts": {
        "prom-1": {"ansible_connection": "local",
                   "ansible_python_interpreter": sys.executable}}}}}}))
    return inventory, tmp_path / "rules"


def test_monitoring_playbook_installs_checked_rules_once(prometheus_host):
    assert shutil.which("promtool"), "promtool is missing (scripts/bootstrap.sh installs it)"
    inventory, rules_dir = prometheus_host
    args = ["-e", f"photo_sync_prometheus_rules_dir={rules_dir}",
            "-e", "photo_sync_prometheus_service="]
    first = playbook("monitoring.yml", inventory, *args)
    assert first.returncode == 0, first.stdout[-3000:]
    installed = rules_dir / "photo-sync.rules.yml"
    assert installed.read_bytes() == (ROOT / "monitoring" / "photo-sync.rules.yml").read_bytes()
    again = playbook("monitoring.yml", inventory, *args)
    assert again.returncode == 0 and re.search(r"changed=0\b", again.stdout), again.stdout


def test_monitoring_playbook_refuses_rules_promtool_rejects(prometheus_host, tmp_path):
    inventory, rules_dir = prometheus_host
    broken = tmp_path / "broken.rules.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: Broken\n"
                      "        expr: 'sum(('\n")
    run = playbook("monitoring.yml", inventory,
                   "-e", f"photo_sync_prometheus_rules_dir={rules_dir}",
                   "-e", "photo_sync_prometheus_service=",
                   "-e", f"photo_sync_prometheus_rules_src={broken}")
    assert run.returncode != 0
    assert "failed to validate" in run.stdout, run.stdout[-3000:]
    assert not (rules_dir / "photo-sync.rules.yml").exists()
    assert not (rules_dir / "broken.rules.yml").exists()


def test_monitoring_playbook_installs_every_rules_file_of_the_checkout(prometheus_host, tmp_path):
    """Every monitoring/*.rules.yml beside the playbook, by the glob: a checkout with a
    second rules file (the HO's) gets both installed."""
    inventory, rules_dir = prometheus_host
    checkout = tmp_path / "checkout"
    (checkout / "playbooks").mkdir(parents=True)
    shutil.copy(ROOT / "playbooks" / "monitoring.yml", checkout / "playbooks")
    (checkout / "monitoring").mkdir()
    shutil.copy(ROOT / "monitoring" / "photo-sync.rules.yml", checkout / "monitoring")
    (checkout / "monitoring" / "photo-sync-ho.rules.yml").write_text(
        "groups:\n  - name: ho\n    rules:\n      - alert: HOTest\n        expr: up == 0\n")
    (checkout / "monitoring" / "notes.yml").write_text("not: rules\n")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    run = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory),
                          str(checkout / "playbooks" / "monitoring.yml"),
                          "-e", f"photo_sync_prometheus_rules_dir={rules_dir}",
                          "-e", "photo_sync_prometheus_service="],
                         env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:]
    assert sorted(path.name for path in rules_dir.iterdir()) == [
        "photo-sync-ho.rules.yml", "photo-sync.rules.yml"]
    assert (rules_dir / "photo-sync-ho.rules.yml").read_text().endswith("expr: up == 0\n")


PROMETHEUS_YML = """# the operator's own configuration
global:
  scrape_interval: 15s
rule_files:
  - /etc/prometheus/rules/*.yml
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ['localhost:9100']
"""


def api_inventory(tmp_path: Path, api_hosts: dict | None) -> Path:
    groups = {"prometheus": {"hosts": {"prom-1": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}
    if api_hosts is not None:
        groups["ho_api"] = {"hosts": api_hosts}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": groups}}))
    return inventory


def test_monitoring_playbook_adds_a_scrape_job_for_the_api_hosts(tmp_path):
    config = tmp_path / "prometheus.yml"
    config.write_text(PROMETHEUS_YML)
    inventory = api_inventory(tmp_path, {
        "ho-1": {"ansible_host": "10.0.0.5", "ho_sync_api_metrics_bind": "0.0.0.0:9464"},
        "ho-2": None,  # the default bind, 127.0.0.1:9464: not reachable from prom-1
        "ho-3": {"ho_sync_api_metrics_bind": "192.0.2.7:9200"},
        "ho-4": {"ho_sync_api_metrics_bind": "[::]:9464"},
    })
    args = ["-e", f"photo_sync_prometheus_rules_dir={tmp_path / 'rules'}",
            "-e", "photo_sync_prometheus_service=",
            "-e", f"photo_sync_prometheus_config={config}"]
    first = playbook("monitoring.yml", inventory, *args)
    assert first.returncode == 0, first.stdout[-3000:]
    written = yaml.safe_load(config.read_text())
    jobs = {job["job_name"]: job for job in written["scrape_configs"]}
    assert jobs["node"]["static_configs"] == [{"targets": ["localhost:9100"]}]
    assert jobs["photo_sync_ho"]["metrics_path"] == "/metrics"
    assert jobs["photo_sync_ho"]["static_configs"] == [
        {"targets": ["10.0.0.5:9464", "ho-2:9464", "192.0.2.7:9200", "ho-4:9464"]}]
    assert written["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert "ho-2: the HO metrics endpoint listens on loopback only" in first.stdout
    check = subprocess.run([shutil.which("promtool") or "promtool", "check", "config",
                            str(config)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    again = playbook("monitoring.yml", inventory, *args)
    assert again.returncode == 0 and re.search(r"changed=0\b", again.stdout), again.stdout
    dry = playbook("monitoring.yml", inventory, *args, "--check", "--diff")
    assert dry.returncode == 0 and re.search(r"changed=0\b", dry.stdout), dry.stdout


def test_monitoring_playbook_leaves_prometheus_config_alone_without_api_hosts(tmp_path):
    config = tmp_path / "prometheus.yml"
    config.write_text(PROMETHEUS_YML)
    run = playbook("monitoring.yml", api_inventory(tmp_path, None),
                   "-e", f"photo_sync_prometheus_rules_dir={tmp_path / 'rules'}",
                   "-e", "photo_sync_prometheus_service=",
                   "-e", f"photo_sync_prometheus_config={config}")
    assert run.returncode == 0, run.stdout[-3000:]
    assert config.read_text() == PROMETHEUS_YML
    assert (tmp_path / "rules" / "photo-sync.rules.yml").exists()
