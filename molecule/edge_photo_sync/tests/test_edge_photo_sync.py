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


def test_changed_schedule_is_live(host):
    """side_effect moved the incremental run to :30: systemd reloaded and the timer restarted."""
    timer = "photo-sync-edge-incremental.timer"
    unit_file = host.file(f"/etc/systemd/system/{timer}")
    assert "OnCalendar=*-*-* *:30:00" in unit_file.content_string
    props = show(host, timer, "TimersCalendar", "NeedDaemonReload")
    assert "*-*-* *:30:00" in props["TimersCalendar"]
    assert props["NeedDaemonReload"] == "no"
    entered = host.check_output(
        f"systemctl show -p ActiveEnterTimestamp --value --timestamp=unix {timer}")
    assert int(entered.lstrip("@")) >= unit_file.mtime.timestamp() // 1


def test_service_is_hardened(host):
    props = show(host, SERVICE, "User", "ProtectSystem", "ProtectHome", "PrivateTmp",
                 "NoNewPrivileges", "RestrictAddressFamilies", "ExecStart")
    assert props["User"] == "photo_sync"
    assert props["ProtectSystem"] == "strict"
    assert props["ProtectHome"] == "yes"
    assert props["PrivateTmp"] == "yes"
    assert props["NoNewPrivileges"] == "yes"
    assert "pull --mode incremental" in props["ExecStart"]


def test_settings_file_is_readable_not_writable_by_the_agent(host):
    """root:photo_sync 0640: the agent and the modules read it, never change it."""
    env = host.file("/etc/photo-sync/edge.env")
    assert (env.user, env.group, env.mode) == ("root", "photo_sync", 0o640)
    assert host.run("runuser -u photo_sync -- test -r /etc/photo-sync/edge.env").rc == 0
    assert host.run("runuser -u photo_sync -- test -w /etc/photo-sync/edge.env").rc != 0
    assert host.run("runuser -u nobody -- test -r /etc/photo-sync/edge.env").rc != 0
    assert "PHOTO_SYNC_EDGE_STORE_ID=7e57a11e-0000-4000-8000-000000000002" in env.content_string
    # The CA bundle is a setting of the file (modules see it too), not of a unit's environment.
    assert "PHOTO_SYNC_EDGE_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt" in env.content_string
    assert "REQUESTS_CA_BUNDLE" not in host.check_output(
        f"systemctl show -p Environment --value {SERVICE}")


@pytest.mark.parametrize("mode", ["incremental", "full"])
def test_unit_exposure_is_at_most_3(host, mode):
    """systemd-analyze security: the agent's service scores 3.0 or better."""
    out = host.check_output(f"systemd-analyze security photo-sync-edge@{mode}.service")
    score = float(out.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
    assert score <= 3.0, out


def test_run_is_bounded(host):
    """A run has a memory and task ceiling and a deadline (TimeoutStartSec: oneshot)."""
    props = show(host, SERVICE, "MemoryMax", "TasksMax", "TimeoutStartUSec", "Type")
    assert props["Type"] == "oneshot"
    assert props["MemoryMax"] == str(256 * 1024 ** 2)
    assert props["TasksMax"] == "64"
    assert props["TimeoutStartUSec"] == "4h"


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
