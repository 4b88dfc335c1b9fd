"""A store in ansible-pull mode (side_effect_pull.yml bootstrapped it and started the pull
service once): it applied the edge_photo_sync role to itself from branch wave-1, holds
HO's photos, keeps re-applying on a timer, and its secret stays out of the journal."""

import json

import pytest

testinfra_hosts = ["ansible://pull_stores"]

PULL = "photo-sync-pull"
SECRET = "molecule-test-only-pull-secret"


@pytest.fixture(autouse=True)
def journal_on_failure(request, host):
    """When an assertion fails, show what the pull runs said."""
    yield
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(host.run(f"journalctl -u {PULL}.service --no-pager -n 80").stdout)


def show(host, unit, *props):
    out = host.check_output(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
    return dict(line.split("=", 1) for line in out.splitlines())


@pytest.mark.parametrize("timer", ["photo-sync-edge-incremental.timer",
                                   "photo-sync-edge-full.timer"])
def test_the_role_installed_and_enabled_the_agent_timers(host, timer):
    props = show(host, timer, "ActiveState", "UnitFileState")
    assert (props["ActiveState"], props["UnitFileState"]) == ("active", "enabled")


def test_the_pull_timer_runs_on_the_schedule_of_the_settings_file(host):
    props = show(host, f"{PULL}.timer", "ActiveState", "UnitFileState", "TimersCalendar",
                 "RandomizedDelayUSec", "NextElapseUSecRealtime")
    assert (props["ActiveState"], props["UnitFileState"]) == ("active", "enabled")
    assert "*-*-* *:20:00" in props["TimersCalendar"]
    assert props["RandomizedDelayUSec"] == "30min"
    assert props["NextElapseUSecRealtime"] not in ("", "0", "n/a")


def test_the_pull_service_follows_the_wave_branch(host):
    exec_start = show(host, f"{PULL}.service", "ExecStart")["ExecStart"]
    assert "--checkout wave-1" in exec_start
    assert "--extra-vars @/etc/photo-sync/pull-vars.yml" in exec_start
    branch = host.check_output("git -C /var/lib/photo-sync-pull/checkout rev-parse HEAD")
    assert branch == host.check_output("git --git-dir /srv/photo-sync.git rev-parse wave-1")
    result = show(host, f"{PULL}.service", "Result", "ExecMainStatus")
    assert (result["Result"], result["ExecMainStatus"]) == ("success", "0")


def test_the_store_holds_hos_photos_byte_for_byte(host):
    """verify compares the store with HO's listing, the bytes hashed inside PostgreSQL."""
    out = host.run("runuser -u photo_sync -- /opt/photo-sync/venv/bin/photo-sync-edge "
                   "--config /etc/photo-sync/edge.env verify --json")
    assert out.rc == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["matches"] and report["listed"] == 6 and report["held"] == 6, report
    synced = host.check_output(
        "runuser -u postgres -- psql -XAtq -d edge -c \"SELECT count(*) FROM product_photo "
        "WHERE sync_status = 'synced' AND md5(image_binary) = checksum\"")
    assert synced == "6"


def test_the_store_reports_as_itself(host):
    env = host.file("/etc/photo-sync/edge.env").content_string
    assert "PHOTO_SYNC_EDGE_STORE_ID=7e57a11e-0000-4000-8000-000000000003" in env


def test_the_settings_file_is_roots_alone(host):
    settings = host.file("/etc/photo-sync/pull-vars.yml")
    assert (settings.user, settings.group, settings.mode) == ("root", "root", 0o600)
    assert host.run("runuser -u photo_sync -- cat /etc/photo-sync/pull-vars.yml").rc != 0


def test_the_secret_is_not_in_the_journal_or_the_unit(host):
    journal = host.check_output(f"journalctl -u {PULL}.service -o cat --no-pager")
    assert "PLAY RECAP" in journal  # the run's output is there to look through
    assert SECRET not in journal
    assert SECRET not in host.file(f"/etc/systemd/system/{PULL}.service").content_string
    assert SECRET not in host.check_output("journalctl -o cat --no-pager")
