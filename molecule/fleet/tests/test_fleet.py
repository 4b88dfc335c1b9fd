"""The rolled-out fleet: HO serving, every store migrated, scheduled and byte-identical to HO."""

import hashlib
import json
import os
from pathlib import Path

import pytest
import testinfra

testinfra_hosts = ["ansible://all"]

STORES = ("fleet-store1", "fleet-store2", "fleet-store3")
CATALOG, API2, GATEWAY = "fleet-ho", "fleet-ho2", "fleet-ho"
API_HOSTS = (CATALOG, API2)
HARDENING = {"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
             "NoNewPrivileges": "yes"}


def _host(name):
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}")


@pytest.fixture(scope="module")
def ho():
    return _host("fleet-ho")


@pytest.fixture(autouse=True)
def journal_on_failure(request, host):
    """When an assertion fails, show what the photo-sync units said on that host."""
    yield
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(host.run("journalctl -u 'photo-sync*' --no-pager -n 80").stdout)


def show(host, unit, *props):
    out = host.check_output(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
    return dict(line.split("=", 1) for line in out.splitlines())


def is_store(host):
    return host.backend.get_hostname() in STORES


def is_catalog(host):
    return host.backend.get_hostname() == CATALOG


def is_api(host):
    return host.backend.get_hostname() in API_HOSTS


def settings(host, path):
    """The KEY=value lines of a root-only settings file."""
    return dict(line.split("=", 1) for line in host.check_output(f"cat {path}").splitlines()
                if "=" in line and not line.startswith("#"))


def psql(host, db, sql, user="postgres"):
    return host.check_output(f"runuser -u {user} -- psql -XAtq -d {db} -F '|' -c \"{sql}\"")


def ho_catalog(ho):
    rows = psql(ho, "photo_sync_ho", "SELECT id, checksum, filename FROM product_photo "
                                     "WHERE deleted_at IS NULL", user="photo_sync")
    return {r.split("|")[0]: (r.split("|")[1], r.split("|")[2]) for r in rows.splitlines()}


def test_ho_serves_healthy_and_hardened(host, ho):
    if not is_api(host):
        pytest.skip("API hosts only")
    units = ("photo-sync-ho",) + (("photo-sync-s3", "postgresql") if is_catalog(host) else ())
    for unit in units:
        assert host.service(unit).is_running, unit
    props = show(host, "photo-sync-ho", "Type", "User", *HARDENING)
    assert props.pop("Type") == "notify"
    assert props.pop("User") == "photo_sync"
    assert props == HARDENING
    bind = settings(host, "/etc/photo-sync/ho.env")["PHOTO_SYNC_HO_BIND"]
    health = host.check_output(
        "python3 -c \"import urllib.request;"
        f"print(urllib.request.urlopen('http://{bind}/api/v1/health/').read().decode())\"")
    assert json.loads(health)["status"] == "ok"


def test_gunicorn_listens_on_the_private_address_only(host):
    """Behind the gateway, gunicorn binds the host's private address, never every address."""
    if not is_api(host):
        pytest.skip("API hosts only")
    bind = settings(host, "/etc/photo-sync/ho.env")["PHOTO_SYNC_HO_BIND"]
    listening = host.check_output("ss -Hltn 'sport = :8080'").split()
    assert bind in listening
    assert "0.0.0.0:8080" not in listening and "*:8080" not in listening
    assert not bind.startswith(("0.0.0.0", "127."))


def test_api_only_host_has_no_catalog_of_its_own(host):
    """The second API host reaches the catalog over the network, as its own login, over TLS."""
    if host.backend.get_hostname() != API2:
        pytest.skip("the API-only host")
    url = settings(host, "/etc/photo-sync/ho.env")["PHOTO_SYNC_HO_DATABASE_URL"]
    assert url.startswith("postgresql://photo_sync_api:") and f"@{CATALOG}/" in url
    assert url.endswith("sslmode=require")
    assert not host.service("photo-sync-s3").is_running


def test_gateway_serves_tls_and_keeps_its_key_private(host):
    if host.backend.get_hostname() != GATEWAY:
        pytest.skip("the gateway")
    assert host.service("nginx").is_running
    key = host.file("/etc/nginx/tls/ho_gateway.key")
    assert (key.user, key.group, key.mode) == ("root", "root", 0o600)
    # nginx.conf holds the signed links' secret (the demo inventory sets one).
    conf = host.file("/etc/nginx/nginx.conf")
    assert (conf.user, conf.group, conf.mode) == ("root", "root", 0o600)
    assert conf.contains("secure_link_md5")
    listening = host.check_output("ss -Hltn").split()
    assert "0.0.0.0:443" in listening
    # The access log: which API host served, never a credential.
    log = host.check_output("cat /var/log/nginx/access.log")
    assert log.count('"path":"/api/v1/auth/token/"') >= 3
    assert "Bearer" not in log and "eyJ" not in log and "secret" not in log.lower()


def test_store_reaches_ho_through_the_gateway_over_tls(host):
    """The agent's HO is https://<gateway>, verified against the CA the rollout put there."""
    if not is_store(host):
        pytest.skip("stores only")
    env = settings(host, "/etc/photo-sync/edge.env")
    assert env["PHOTO_SYNC_EDGE_HO_URL"] == f"https://{GATEWAY}"
    assert env["PHOTO_SYNC_EDGE_CA_BUNDLE"] == "/etc/ssl/photo-sync-ho-ca.pem"
    assert "PHOTO_SYNC_EDGE_ALLOW_HTTP" not in env
    check = ("import json, ssl, urllib.request; ctx = ssl.create_default_context(cafile="
             "'/etc/ssl/photo-sync-ho-ca.pem'); print(json.load(urllib.request.urlopen("
             f"'https://{GATEWAY}/api/v1/health/', context=ctx))['status'])")
    assert host.check_output(f'python3 -c "{check}"') == "ok"
    # Plain http is only ever a redirect to https.
    redirect = host.run(f"python3 -c \"import http.client; c = http.client.HTTPConnection("
                        f"'{GATEWAY}', 80, timeout=10); c.request('GET', '/api/v1/health/'); "
                        "r = c.getresponse(); print(r.status, r.getheader('Location'))\"")
    assert redirect.stdout.strip() == f"301 https://{GATEWAY}/api/v1/health/"


def test_ho_catalog_matches_the_imported_files(host, ho):
    """HO's checksums are those of the JPEGs the controller generated."""
    if not is_catalog(host):
        pytest.skip("the catalog host only")
    photos = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "photos")
    local = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in photos.glob("*.jpg")}
    catalog = {name: checksum for checksum, name in ho_catalog(ho).values()}
    assert len(local) == 24
    assert {n: catalog.get(n) for n in local} == local


def test_store_timers_scheduled(host):
    if not is_store(host):
        pytest.skip("stores only")
    for timer in ("photo-sync-edge-incremental.timer", "photo-sync-edge-full.timer"):
        props = show(host, timer, "ActiveState", "UnitFileState", "NextElapseUSecRealtime")
        assert props["ActiveState"] == "active", timer
        assert props["UnitFileState"] == "enabled", timer
        assert props["NextElapseUSecRealtime"] not in ("", "0", "n/a"), timer


def test_store_agent_hardened(host):
    if not is_store(host):
        pytest.skip("stores only")
    props = show(host, "photo-sync-edge@incremental.service", "User", *HARDENING)
    assert props.pop("User") == "photo_sync"
    assert props == HARDENING
    env = host.file("/etc/photo-sync/edge.env")
    assert (env.user, env.group, env.mode) == ("root", "photo_sync", 0o640)


def test_every_installed_unit_scores_at_most_3(host):
    """systemd-analyze security: each service the roles installed on this host scores <= 3.0."""
    units = (("photo-sync-edge@incremental", "photo-sync-edge@full") if is_store(host)
             else ("photo-sync-ho", "photo-sync-s3") if is_catalog(host) else ("photo-sync-ho",))
    for unit in units:
        out = host.check_output(f"systemd-analyze security {unit}.service")
        score = float(out.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
        assert score <= 3.0, out


def test_ho_secret_files_not_writable_by_the_services(host):
    if not is_api(host):
        pytest.skip("HO only")
    paths = ("/etc/photo-sync/ho.env", "/etc/photo-sync/s3.json") if is_catalog(host) else (
        "/etc/photo-sync/ho.env",)
    for path in paths:
        secrets = host.file(path)
        assert (secrets.user, secrets.group, secrets.mode) == ("root", "photo_sync", 0o640), path


def test_store_photos_byte_identical_to_ho(host, ho):
    """Every photo HO has is in the store's database, with HO's bytes, marked synced."""
    if not is_store(host):
        pytest.skip("stores only")
    catalog = ho_catalog(ho)
    rows = psql(host, "edge", "SELECT id, md5(image_binary), sync_status FROM product_photo")
    held = {r.split("|")[0]: (r.split("|")[1], r.split("|")[2]) for r in rows.splitlines()}
    assert len(catalog) == 24
    assert {pid: held.get(pid) for pid in catalog} == {pid: (md5, "synced")
                                                       for pid, (md5, _) in catalog.items()}


def test_store_kept_its_old_table(host):
    """The migration added columns to the store's table; its own rows and column stay."""
    if not is_store(host):
        pytest.skip("stores only")
    owner = psql(host, "edge", "SELECT tableowner FROM pg_tables WHERE tablename = 'product_photo'")
    assert owner == "store_app"
    legacy = psql(host, "edge", "SELECT count(*) FROM product_photo "
                                "WHERE shelf_label LIKE 'legacy photo-%' AND image_binary IS NOT NULL")
    assert legacy == "8"


def test_ho_received_every_store_report(host, ho):
    if not is_catalog(host):
        pytest.skip("the catalog host only")
    out = host.check_output("runuser -u photo_sync -- /opt/photo-sync/venv/bin/photo-sync-ho "
                            "--config /etc/photo-sync/ho.env store list --json")
    stores = {s["name"]: s for s in json.loads(out)}
    assert sorted(stores) == sorted(STORES)
    assert all(s["synced"] == 24 and s["failed"] == 0 for s in stores.values()), stores
