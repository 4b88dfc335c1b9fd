"""A store set up by the edge_photo_sync role on a bare Debian: migrated, timers scheduled,
synced from the scenario's HO, the photo server up on its own read-only role, the weekly
verify scheduled (and run once by side_effect)."""

import json
import shlex
import time
import uuid

import pytest

testinfra_hosts = ["ansible://stores"]

SERVICE = "photo-sync-edge@incremental.service"
TIMERS = ("photo-sync-edge-incremental.timer", "photo-sync-edge-full.timer")


@pytest.fixture(autouse=True)
def journal_on_failure(request, host):
    """When an assertion fails, show what systemd said about the agent."""
    yield
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(host.run("journalctl -u 'photo-sync-edge*' --no-pager -n 80").stdout)


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
    assert psql(host, "SELECT count(*) FROM product_photo", user="photo_sync") == "6"


# The photo server -------------------------------------------------------------------

SERVE = "photo-sync-edge-serve.service"


def fetch(host, path, headers=None):
    """GET on the store itself (nginx binds loopback): status, headers, MD5 of the body."""
    code = (
        "import hashlib, json, urllib.request, urllib.error\n"
        f"req = urllib.request.Request('http://127.0.0.1:8091{path}', headers={headers or {}!r})\n"
        "try:\n    r = urllib.request.urlopen(req, timeout=10)\n"
        "except urllib.error.HTTPError as e:\n    r = e\n"
        "body = r.read()\n"
        "print(json.dumps({'status': r.status, 'headers': dict(r.headers.items()),"
        " 'md5': hashlib.md5(body).hexdigest(), 'length': len(body)}))\n")
    return json.loads(host.check_output(f"python3 -c {shlex.quote(code)}"))


def test_photo_server_runs_as_its_own_user_on_the_configured_address(host):
    props = show(host, SERVE, "ActiveState", "UnitFileState", "User", "MemoryMax", "TasksMax")
    assert (props["ActiveState"], props["UnitFileState"]) == ("active", "enabled")
    assert props["User"] == "photo_sync_serve"
    assert props["MemoryMax"] == str(256 * 1024 ** 2) and props["TasksMax"] == "64"
    # nginx where the apps reach the server; gunicorn behind it, on loopback.
    assert host.socket("tcp://127.0.0.1:8091").is_listening
    assert not host.socket("tcp://0.0.0.0:8091").is_listening
    assert host.socket("tcp://127.0.0.1:8099").is_listening
    assert host.service("nginx").is_running and host.service("nginx").is_enabled
    assert not host.file("/etc/nginx/sites-enabled/default").exists
    uid = host.check_output("id -u photo_sync_serve")
    main_pid = host.check_output(f"systemctl show -p MainPID --value {SERVE}")
    master = host.check_output(f"ps -o uid= -p {main_pid}").split()
    workers = host.check_output(f"ps -o uid= --ppid {main_pid}").split()
    assert master == [uid] and workers and set(workers) == {uid}


def test_photo_server_serves_the_stored_bytes_with_their_etag(host):
    photo_id, checksum, stored_md5 = psql(
        host, "SELECT id, checksum, md5(image_binary) FROM product_photo "
              "ORDER BY id LIMIT 1").split("|")
    got = fetch(host, f"/photos/{photo_id}?v={checksum[:8]}")
    assert got["status"] == 200
    assert got["md5"] == stored_md5 == checksum
    assert got["headers"]["ETag"] == f'"{checksum}"'
    assert "immutable" in got["headers"]["Cache-Control"]
    again = fetch(host, f"/photos/{photo_id}", {"If-None-Match": f'"{checksum}"'})
    assert again["status"] == 304
    assert fetch(host, "/health")["status"] == 200
    # The role's first sync filled the agent's photo mirror; nginx sends the photo from it
    # (world-readable, written by the agent) without asking the photo server.
    mirror = "/var/cache/photo-sync-edge-mirror"
    mirrored = host.file(f"{mirror}/objects/{checksum}.jpg/photo.jpg")
    assert mirrored.exists and mirrored.user == "photo_sync" and mirrored.size == got["length"]
    assert mirrored.mode == 0o644 and host.file(f"{mirror}/ids/{photo_id}").is_symlink
    assert psql(host, "SELECT count(*) FROM product_photo") == str(
        len(host.file(f"{mirror}/ids").listdir()))
    hit, miss = f"hit{uuid.uuid4().hex}", f"miss{uuid.uuid4().hex}"
    assert fetch(host, f"/photos/{photo_id}?probe={hit}")["md5"] == checksum
    assert fetch(host, f"/health?probe={miss}")["status"] == 200  # proxied: logged
    for _ in range(20):
        journal = host.check_output(f"journalctl -u {SERVE} --no-pager -n 200 -o cat")
        if miss in journal:
            break
        time.sleep(0.5)
    assert miss in journal and hit not in journal
def test_photo_server_role_cannot_write(host):
    """The server's database role may SELECT the photo table and nothing else."""
    assert psql(host, "SELECT count(*) FROM product_photo", user="photo_sync_serve") == "6"
    for sql in ("INSERT INTO product_photo (id) VALUES (gen_random_uuid())",
                "UPDATE product_photo SET sync_status = 'pending'",
                "DELETE FROM product_photo",
                "SELECT count(*) FROM photo_sync_retry"):
        out = host.run(f"runuser -u photo_sync_serve -- psql -XAtq -d edge -c \"{sql}\"")
        assert out.rc != 0 and "permission denied" in out.stderr, (sql, out.stdout, out.stderr)
    assert psql(host, "SELECT count(*) FROM product_photo WHERE sync_status = 'synced'") == "6"


def test_photo_server_settings_hold_no_ho_secret(host):
    env = host.file("/etc/photo-sync/serve.env")
    assert (env.user, env.group, env.mode) == ("root", "photo_sync_serve", 0o640)
    assert "STORE_SECRET" not in env.content_string
    assert "PHOTO_SYNC_EDGE_SERVE_BIND=127.0.0.1:8099" in env.content_string
    # Outside the agent's group: the agent's settings (HO secret) are out of its reach.
    assert host.run("runuser -u photo_sync_serve -- cat /etc/photo-sync/edge.env").rc != 0


def test_photo_server_is_as_hardened_as_the_agent(host):
    def score(unit):
        out = host.check_output(f"systemd-analyze security {unit}")
        return float(out.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])

    assert score(SERVE) <= score(SERVICE)


# The weekly verify and the metrics -------------------------------------------------

def test_weekly_verify_is_scheduled(host):
    timer = "photo-sync-edge-verify.timer"
    props = show(host, timer, "ActiveState", "UnitFileState", "TimersCalendar",
                 "RandomizedDelayUSec")
    assert (props["ActiveState"], props["UnitFileState"]) == ("active", "enabled")
    assert "OnCalendar=" in props["TimersCalendar"]
    assert props["RandomizedDelayUSec"] == "6h"
    service = show(host, "photo-sync-edge-verify.service", "ExecStart", "User")
    assert "verify --repair" in service["ExecStart"] and service["User"] == "photo_sync"


def test_weekly_verify_ran_and_left_its_metrics(host):
    """side_effect started the unit once on the healed store: success, a clean textfile."""
    result = show(host, "photo-sync-edge-verify.service", "Result", "ExecMainStatus",
                  "ExecMainExitTimestampMonotonic")
    assert (result["Result"], result["ExecMainStatus"]) == ("success", "0")
    assert int(result["ExecMainExitTimestampMonotonic"]) > 0, "the unit never ran"
    prom = host.file("/var/lib/prometheus/node-exporter/photo_sync_verify.prom")
    assert prom.user == "photo_sync" and prom.mode == 0o644
    assert 'photo_sync_verify_photos{kind="corrupt"} 0' in prom.content_string


def test_metrics_land_in_the_textfile_collector_folder(host):
    folder = "/var/lib/prometheus/node-exporter"
    assert "photo_sync_last_run_success" in host.file(f"{folder}/photo_sync.prom").content_string
    assert "photo_sync_database_capacity_bytes 1073741824" in host.file(
        f"{folder}/photo_sync_capacity.prom").content_string
