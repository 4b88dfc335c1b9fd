"""The HO sync API as deployed by the ho_sync_api role: up, healthy, hardened."""

import json

import pytest

testinfra_hosts = ["ansible://psync-mol-ho"]

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


@pytest.mark.parametrize("path", ["/etc/photo-sync/ho.env", "/etc/photo-sync/s3.json"])
def test_secret_files_are_readable_not_writable_by_the_services(host, path):
    """root:photo_sync 0640: the services read their secrets, never change them."""
    secrets = host.file(path)
    assert (secrets.user, secrets.group, secrets.mode) == ("root", "photo_sync", 0o640)
    for user in ("photo_sync", "photo_sync_s3"):
        assert host.run(f"runuser -u {user} -- test -r {path}").rc == 0, user
        assert host.run(f"runuser -u {user} -- test -w {path}").rc != 0, user
    assert host.run(f"runuser -u nobody -- test -r {path}").rc != 0


def test_api_runs_with_the_changed_setting(host):
    """side_effect changed the token TTL: the handler restarted the API after writing the file."""
    env = host.file("/etc/photo-sync/ho.env")
    assert "PHOTO_SYNC_HO_TOKEN_TTL=1800" in env.content_string
    started = host.check_output(
        f"systemctl show -p ExecMainStartTimestamp --value --timestamp=unix {UNIT}")
    assert int(started.lstrip("@")) >= env.mtime.timestamp() // 1


@pytest.mark.parametrize("unit", [UNIT, "photo-sync-s3"])
def test_unit_exposure_is_at_most_3(host, unit):
    """systemd-analyze security: every unit the role installs scores 3.0 or better."""
    out = host.check_output(f"systemd-analyze security {unit}.service")
    score = float(out.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
    assert score <= 3.0, out


def test_unit_has_resource_ceilings(host):
    props = show(host, UNIT, "MemoryMax", "TasksMax", "TimeoutStartUSec")
    assert props["MemoryMax"] == str(1024 ** 3)
    assert props["TasksMax"] == "256"
    assert props["TimeoutStartUSec"] == "1min 30s"


def test_s3_user_is_no_admin(host):
    """The API's S3 identity may use its bucket, nothing else: no Admin, no other bucket."""
    config = json.loads(host.file("/etc/photo-sync/s3.json").content_string)
    (identity,) = config["identities"]
    assert sorted(identity["actions"]) == sorted(
        f"{action}:product-photos" for action in ("Read", "List", "Tagging", "Write"))


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


def test_disabled_stores_stay_disabled(host):
    """A store disabled at HO stays disabled through a rollout; state: disabled disables one."""
    out = host.check_output(
        "runuser -u photo_sync -- /opt/photo-sync/venv/bin/photo-sync-ho "
        "--config /etc/photo-sync/ho.env store list --json")
    stores = {s["id"]: s for s in json.loads(out)}
    # Disabled by an operator in side_effect, then the role ran again (state: registered).
    assert stores["7e57a11e-0000-4000-8000-000000000001"]["active"] is False
    # state: disabled in the inventory.
    assert stores["7e57a11e-0000-4000-8000-000000000003"]["active"] is False
