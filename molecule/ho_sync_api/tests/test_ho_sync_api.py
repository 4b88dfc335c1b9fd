"""The HO sync API as deployed by the ho_sync_api role: up, healthy, hardened."""

import json

import pytest

testinfra_hosts = ["ansible://all"]

UNIT = "photo-sync-ho"


@pytest.fixture(autouse=True)
def journal_on_failure(request, host):
    """When an assertion fails, show what the services said."""
    yield
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for unit in (UNIT, "photo-sync-s3"):
            print(host.run(f"journalctl -u {unit} --no-pager -n 60").stdout)


def show(host, unit, *props):
    out = host.check_output(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
    return dict(line.split("=", 1) for line in out.splitlines())


def test_services_active_and_enabled(host):
    for unit in (UNIT, "photo-sync-s3", "postgresql"):
        service = host.service(unit)
        assert service.is_running, unit
        assert service.is_enabled, unit


def test_unit_is_hardened(host):
    props = show(host, UNIT, "Type", "User", "ProtectSystem", "ProtectHome", "PrivateTmp",
                 "NoNewPrivileges", "RestrictAddressFamilies", "StateDirectory",
                 "CapabilityBoundingSet")
    assert props["Type"] == "notify"
    assert props["User"] == "photo_sync"
    assert props["ProtectSystem"] == "strict"
    assert props["ProtectHome"] == "yes"
    assert props["PrivateTmp"] == "yes"
    assert props["NoNewPrivileges"] == "yes"
    assert set(props["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert props["StateDirectory"] == UNIT
    assert props["CapabilityBoundingSet"] == ""
    unit_file = host.file(f"/etc/systemd/system/{UNIT}.service")
    assert unit_file.content_string.startswith("#")
    assert "Ansible managed" in unit_file.content_string


def test_workers_do_not_run_as_root(host):
    pids = host.check_output(f"systemctl show -p MainPID --value {UNIT}")
    users = host.check_output(f"ps -o user= --ppid {pids} -p {pids}").split()
    assert users and set(users) == {"photo_sync"}


def test_settings_file_is_private(host):
    env = host.file("/etc/photo-sync/ho.env")
    assert env.mode == 0o600
    assert env.user == "photo_sync"
    assert "PHOTO_SYNC_HO_JWT_SECRET=" in env.content_string


def test_health_endpoint_reports_ok(host):
    out = host.check_output(
        "python3 -c \"import urllib.request,sys;"
        "r=urllib.request.urlopen('http://127.0.0.1:8080/api/v1/health/');"
        "print(r.status);print(r.read().decode())\"")
    status, body = out.split("\n", 1)
    assert status == "200"
    assert json.loads(body)["status"] == "ok"


def test_store_is_registered(host):
    out = host.check_output(
        "runuser -u photo_sync -- /opt/photo-sync/venv/bin/photo-sync-ho "
        "--config /etc/photo-sync/ho.env store list --json")
    stores = {s["id"]: s for s in json.loads(out)}
    assert "7e57a11e-0000-4000-8000-000000000001" in stores
    assert stores["7e57a11e-0000-4000-8000-000000000001"]["name"] == "molecule-store"
