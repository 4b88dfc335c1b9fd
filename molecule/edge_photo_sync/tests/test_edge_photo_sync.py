"""A store set up by the edge_photo_sync role on a bare Debian: migrated, timers scheduled."""

import pytest

testinfra_hosts = ["ansible://all"]

SERVICE = "photo-sync-edge@incremental.service"
TIMERS = ("photo-sync-edge-incremental.timer", "photo-sync-edge-full.timer")


@pytest.fixture(autouse=True)
def journal_on_failure(request, host):
    """When an assertion fails, show what systemd said about the agent."""
    yield
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(host.run("journalctl -u 'photo-sync-edge*' --no-pager -n 60").stdout)


def show(host, unit, *props):
    out = host.check_output(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
    return dict(line.split("=", 1) for line in out.splitlines())


def psql(host, sql, user="postgres"):
    return host.check_output(f"runuser -u {user} -- psql -XAtq -d edge -c \"{sql}\"")


def test_postgresql_was_installed_and_runs(host):
    assert host.package("postgresql").is_installed
    assert host.service("postgresql").is_running


@pytest.mark.parametrize("timer", TIMERS)
def test_timers_are_scheduled(host, timer):
    props = show(host, timer, "ActiveState", "UnitFileState", "NextElapseUSecRealtime")
    assert props["ActiveState"] == "active"
    assert props["UnitFileState"] == "enabled"
    assert props["NextElapseUSecRealtime"] not in ("", "0", "n/a")


def test_timer_schedule(host):
    text = host.file("/etc/systemd/system/photo-sync-edge-full.timer").content_string
    assert "OnCalendar=*-*-* 02:00:00" in text
    assert "Persistent=true" in text
    assert "RandomizedDelaySec=" in text
    assert "OnCalendar=hourly" in host.file(
        "/etc/systemd/system/photo-sync-edge-incremental.timer").content_string


def test_service_is_hardened(host):
    props = show(host, SERVICE, "User", "ProtectSystem", "ProtectHome", "PrivateTmp",
                 "NoNewPrivileges", "RestrictAddressFamilies", "ExecStart")
    assert props["User"] == "photo_sync"
    assert props["ProtectSystem"] == "strict"
    assert props["ProtectHome"] == "yes"
    assert props["PrivateTmp"] == "yes"
    assert props["NoNewPrivileges"] == "yes"
    assert "pull --mode incremental" in props["ExecStart"]


def test_settings_file_is_private(host):
    env = host.file("/etc/photo-sync/edge.env")
    assert env.mode == 0o600
    assert env.user == "photo_sync"
    assert "PHOTO_SYNC_EDGE_STORE_ID=7e57a11e-0000-4000-8000-000000000002" in env.content_string


def test_schema_has_the_sync_columns(host):
    columns = set(psql(host, "SELECT column_name FROM information_schema.columns "
                             "WHERE table_name = 'product_photo'").split())
    assert {"id", "image_binary", "sync_status", "last_sync_at", "sync_error", "checksum"} <= columns


def test_agent_sees_a_current_schema(host):
    out = host.run("runuser -u photo_sync -- /opt/photo-sync/venv/bin/photo-sync-edge "
                   "--config /etc/photo-sync/edge.env schema check")
    assert out.rc == 0, out.stdout + out.stderr
    assert "current" in out.stdout


def test_agent_role_can_use_the_table(host):
    assert psql(host, "SELECT count(*) FROM product_photo", user="photo_sync") == "0"
