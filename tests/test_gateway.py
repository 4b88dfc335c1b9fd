"""The HO gateway: the role's nginx.conf in front of real gunicorn and real S3, on loopback.

The agent syncs through https; photo bytes go from S3 to the store through nginx
(X-Accel-Redirect), never through Python; nginx's own refusals are JSON in the API's shape;
token guessing, downloads per store and slow clients are limited at the gateway.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
import requests
from requests.adapters import HTTPAdapter

from conftest import BIN, assert_edge_matches_ho, assert_no_bad_bytes, ho_live_photos
from support import gateway as gw_support
from support import testbed
from photo_sync.protocol import API_PREFIX

pytestmark = pytest.mark.skipif(gw_support.nginx_missing() is not None,
                                reason=gw_support.nginx_missing() or "")

# The API's own per-store download cap at 2: a slot an X-Accel answer took and never gave
# back would turn the third download on a worker into a 429 (the leak test below).
ACCEL = {"PHOTO_SYNC_HO_ACCEL_REDIRECT": "true", "PHOTO_SYNC_HO_TRUSTED_PROXIES": "1",
         "PHOTO_SYNC_HO_MAX_DOWNLOADS_PER_STORE": "2"}


class SourceAddressAdapter(HTTPAdapter):
    """requests from a chosen loopback source address (127.0.0.x: another 'client')."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


class GatewaySession(requests.Session):
    """A session that trusts the gateway's test CA (per request: a session-wide verify
    loses to REQUESTS_CA_BUNDLE from the environment)."""

    def __init__(self, ca_path: str):
        super().__init__()
        self.ca_path = ca_path

    def request(self, *args, **kwargs):
        kwargs.setdefault("verify", self.ca_path)
        return super().request(*args, **kwargs)


def _client(gateway, source: str | None = None) -> requests.Session:
    session = GatewaySession(str(gateway.tls.ca_path))
    if source:
        session.mount("https://", SourceAddressAdapter(source))
    return session


def _token(gateway, store_id: str, secret: str) -> str:
    response = _client(gateway).post(f"{gateway.url}{API_PREFIX}/auth/token/", timeout=10,
                                     json={"store_id": store_id, "secret": secret})
    assert response.status_code == 200, response.text
    return response.json()["access"]


def _api_download_lines(ho_server) -> list[tuple[str, int, str]]:
    """(method, status, body bytes) of every download request gunicorn logged."""
    found = []
    for line in ho_server.log_path.read_text().splitlines():
        match = re.search(r'"(GET|HEAD) (\S*/download/\S*) HTTP/[\d.]+" (\d+) (\S+)', line)
        if match:
            found.append((match.group(1), int(match.group(3)), match.group(4)))
    return found


@pytest.fixture(scope="module")
def gw(ho_stack, photo_factory, s3, bed_root):
    """One HO behind one gateway (X-Accel-Redirect on), with 14 photos imported."""
    ho = ho_stack("gateway", extra_env=ACCEL)
    ho.import_dir(photo_factory(14, seed=101, min_kb=20, max_kb=300, mean_kb=120))
    gateway = gw_support.Gateway(bed_root / "gateway", [f"127.0.0.1:{ho.server.port}"],
                                 s3.endpoint, ho.env["PHOTO_SYNC_HO_S3_BUCKET"]).start()
    yield SimpleNamespace(ho=ho, gateway=gateway, s3=s3)
    gateway.stop()


def _edge(make_edge, gw_ns, **env):
    return make_edge(gw_ns.ho, ho_url=gw_ns.gateway.url,
                     ca_bundle=str(gw_ns.gateway.tls.ca_path), **env)


def test_body_cap_is_the_apis_own():
    """client_max_body_size in the role's defaults is the API's MAX_BODY_BYTES: a larger
    cap lets nginx buffer what the API refuses, a smaller one refuses reports HO accepts."""
    from photo_sync.ho.app import MAX_BODY_BYTES
    raw = str(gw_support.role_defaults()["ho_gateway_client_max_body_size"]).lower()
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    value = int(raw[:-1]) * units[raw[-1]] if raw[-1] in units else int(raw)
    assert value == MAX_BODY_BYTES
    assert f"client_max_body_size {raw};" in gw_support.render()


def test_agent_syncs_through_the_gateway_and_no_byte_passes_through_python(
        gw, make_edge, photo_factory):
    edge = _edge(make_edge, gw)
    result, summary = edge.pull("full")
    assert result.returncode == 0, result.stderr
    assert summary["downloaded"] == 14
    assert_edge_matches_ho(edge, gw.ho)

    gw.ho.import_dir(photo_factory(4, seed=102, min_kb=20, max_kb=80, mean_kb=40))
    result, summary = edge.pull("incremental")
    assert result.returncode == 0, result.stderr
    assert summary["downloaded"] == 4
    assert_edge_matches_ho(edge, gw.ho)
    assert_no_bad_bytes(edge)

    # gunicorn answered every download with an empty body; nginx sent the photo bytes.
    downloads = [line for line in _api_download_lines(gw.ho.server) if line[0] == "GET"]
    assert len(downloads) >= 18
    assert all(status == 200 and size in ("0", "-") for _, status, size in downloads), downloads
    sent = [e for e in gw.gateway.access_entries()
            if e["path"].endswith("/download/") and e["status"] == 200]
    assert len(sent) >= 18 and all(e["bytes"] > 1000 for e in sent)


def _first_photo(ho):
    with ho.catalog() as conn:
        return conn.execute("SELECT id::text AS id, checksum, checksum_sha256, version, size, "
                            "object_key FROM product_photo WHERE deleted_at IS NULL "
                            "ORDER BY object_key LIMIT 1").fetchone()


def test_checksum_headers_survive_the_internal_redirect(gw):
    store_id, secret = gw.ho.add_store("headers")
    row = _first_photo(gw.ho)
    url = f"{gw.gateway.url}{API_PREFIX}/sync/product-photos/{row['id']}/download/"
    client = _client(gw.gateway)
    client.headers["Authorization"] = f"Bearer {_token(gw.gateway, store_id, secret)}"

    got = client.get(url, timeout=10)
    assert got.status_code == 200, got.text
    assert hashlib.md5(got.content).hexdigest() == row["checksum"]
    assert len(got.content) == row["size"]
    for response in (got, client.head(url, timeout=10)):
        assert response.status_code == 200
        assert response.headers["X-Checksum"] == row["checksum"]
        assert response.headers["X-Checksum-SHA256"] == row["checksum_sha256"]
        assert response.headers["X-Version"] == str(row["version"])
        assert response.headers["ETag"] == f'"{row["checksum"]}"'
        assert response.headers["Cache-Control"] == "private, max-age=0, must-revalidate"
        assert response.headers["Content-Length"] == str(row["size"])
        assert response.headers["Content-Type"] == "image/jpeg"
        leaked = [h for h in response.headers
                  if h.lower().startswith(("x-amz", "seaweed", "x-accel"))]
        assert not leaked, leaked
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert client.head(url, timeout=10).content == b""

    # Ten times the API's per-store cap (2 with ACCEL): the X-Accel path takes no slot it
    # would have to give back, so none leaks.
    assert [client.get(url, timeout=10).status_code for _ in range(20)] == [200] * 20

    fresh = client.get(url, timeout=10, headers={"If-None-Match": f'"{row["checksum"]}"'})
    assert fresh.status_code == 304 and fresh.content == b""
    assert fresh.headers["ETag"] == f'"{row["checksum"]}"'
    assert fresh.headers["X-Checksum"] == row["checksum"]


def test_bytes_missing_from_s3_are_the_apis_404_object_missing(gw):
    from minio import Minio
    store_id, secret = gw.ho.add_store("missing")
    row = _first_photo(gw.ho)
    bucket = gw.ho.env["PHOTO_SYNC_HO_S3_BUCKET"]
    s3 = Minio(gw.s3.endpoint, gw.s3.access_key, gw.s3.secret_key, secure=False,
               region="us-east-1")
    data = s3.get_object(bucket, row["object_key"]).read()
    s3.remove_object(bucket, row["object_key"])
    try:
        got = _client(gw.gateway).get(
            f"{gw.gateway.url}{API_PREFIX}/sync/product-photos/{row['id']}/download/",
            timeout=10, headers={"Authorization": f"Bearer {_token(gw.gateway, store_id, secret)}"})
    finally:
        import io
        s3.put_object(bucket, row["object_key"], io.BytesIO(data), len(data),
                      content_type="image/jpeg")
    assert got.status_code == 404
    assert got.headers["Content-Type"] == "application/json", (got.headers, got.text)
    assert got.json()["error"] == "object_missing"
    assert "X-Checksum" not in got.headers, "no checksum for bytes that are not there"


def test_oversized_body_is_a_413_json_from_the_gateway(gw):
    store_id, secret = gw.ho.add_store("big-body")
    before = gw.ho.server.log_path.read_text().count("/status/")
    body = json.dumps({"store_id": store_id, "sync_batch": [], "pad": "x" * (2 * 1024 ** 2)})
    got = _client(gw.gateway).post(
        f"{gw.gateway.url}{API_PREFIX}/sync/product-photos/status/", data=body, timeout=20,
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {_token(gw.gateway, store_id, secret)}"})
    assert got.status_code == 413
    assert got.json()["error"] == "request_entity_too_large"
    assert gw.ho.server.log_path.read_text().count("/status/") == before, \
        "nginx refused it: the API never read the body"


def test_token_guessing_is_limited_per_address_with_json_429(gw):
    guesser = _client(gw.gateway, source="127.0.0.3")
    answers = []
    for _ in range(30):
        # A new unknown store each time: the API's per-store count never trips, only the
        # gateway's per-address limit can answer 429 within 30 tries.
        response = guesser.post(f"{gw.gateway.url}{API_PREFIX}/auth/token/", timeout=10,
                                json={"store_id": str(uuid.uuid4()), "secret": "wrong"})
        answers.append(response)
    statuses = [r.status_code for r in answers]
    assert 401 in statuses and 429 in statuses, statuses
    limited = next(r for r in answers if r.status_code == 429)
    assert limited.json()["error"] == "too_many_requests"
    assert int(limited.headers["Retry-After"]) > 0
    assert statuses.index(429) < 29, "the gateway limits before the API's per-address cap"
    # The API counted the failures it saw against the guesser's own address (X-Forwarded-For
    # from the gateway, PHOTO_SYNC_HO_TRUSTED_PROXIES=1), not against the gateway's.
    with gw.ho.catalog() as conn:
        counted = conn.execute("SELECT count(*) AS n FROM auth_failure WHERE key = %s",
                               ("addr:127.0.0.3",)).fetchone()["n"]
    assert counted == statuses.count(401)

    store_id, secret = gw.ho.add_store("neighbour")
    other = _client(gw.gateway, source="127.0.0.4")
    response = other.post(f"{gw.gateway.url}{API_PREFIX}/auth/token/", timeout=10,
                          json={"store_id": store_id, "secret": secret})
    assert response.status_code == 200, response.text


def test_wrong_secrets_for_a_store_through_the_gateway_never_lock_it_out(gw):
    # Fails on the old code: the guesser's wrong secrets that passed the gateway counted
    # against the store id, and the store's own right secret then got the API's 429.
    store_id, secret = gw.ho.add_store("guessed-at")
    guesser = _client(gw.gateway, source="127.0.0.5")
    statuses = [guesser.post(f"{gw.gateway.url}{API_PREFIX}/auth/token/", timeout=10,
                             json={"store_id": store_id, "secret": f"wrong-{i}"}).status_code
                for i in range(30)]
    assert set(statuses) == {401, 429} and statuses[-1] == 429, statuses
    # The gateway slows the guesser's address; the store, from its own address, is let in.
    store = _client(gw.gateway, source="127.0.0.6")
    response = store.post(f"{gw.gateway.url}{API_PREFIX}/auth/token/", timeout=10,
                          json={"store_id": store_id, "secret": secret})
    assert response.status_code == 200, response.text
    listing = store.get(f"{gw.gateway.url}{API_PREFIX}/sync/product-photos/", timeout=10,
                        headers={"Authorization": f"Bearer {response.json()['access']}"})
    assert listing.status_code == 200


def _slow_reader(gateway, token: str, path: str) -> socket.socket:
    """A download that holds its limit_conn slot (support.gateway.Gateway.slow_reader)."""
    return gateway.slow_reader(path, {"Authorization": f"Bearer {token}"})


def test_downloads_per_store_are_capped_while_another_store_downloads(
        ho_stack, s3, bed_root, tmp_path):
    ho = ho_stack("gateway-conn", extra_env=ACCEL)
    testbed.make_jpeg(tmp_path / "big" / str(uuid.uuid4()) / "big.jpg", 12 * 1024 ** 2, 7)
    ho.import_dir(tmp_path / "big")
    gateway = gw_support.Gateway(bed_root / "gateway-conn", [f"127.0.0.1:{ho.server.port}"],
                                 s3.endpoint, ho.env["PHOTO_SYNC_HO_S3_BUCKET"],
                                 ho_gateway_downloads_per_store=2).start()
    held = []
    try:
        row = _first_photo(ho)
        path = f"{API_PREFIX}/sync/product-photos/{row['id']}/download/"
        busy_store = ho.add_store("busy")
        token = _token(gateway, *busy_store)
        held = [_slow_reader(gateway, token, path) for _ in range(2)]
        third = _client(gateway).get(f"{gateway.url}{path}", timeout=10,
                                     headers={"Authorization": f"Bearer {token}"})
        assert third.status_code == 429
        assert third.json()["error"] == "too_many_requests"
        assert third.headers["Retry-After"]
        # The API takes the scheme in any case; so does the cap (it once let "BEARER" by).
        shouted = _client(gateway).get(f"{gateway.url}{path}", timeout=10,
                                       headers={"Authorization": f"BEARER {token}"})
        assert shouted.status_code == 429
        # The cap is keyed on the store the API verified, not on the header's text: a
        # second token of the same store (any store can mint more) once got a cap of its own.
        time.sleep(1.1)  # a new iat: a token that differs from the first
        second = _token(gateway, *busy_store)
        assert second != token
        again = _client(gateway).get(f"{gateway.url}{path}", timeout=10,
                                     headers={"Authorization": f"Bearer {second}"})
        assert again.status_code == 429, again.status_code
        # Neither stalled reader made nginx spool its 12 MB photo to disk (a store that
        # stops reading could fill the gateway's disk): give it time to try.
        time.sleep(1)
        assert "buffered to a temporary file" not in gateway.error_log.read_text()

        other = _client(gateway).get(f"{gateway.url}{path}", timeout=30, headers={
            "Authorization": f"Bearer {_token(gateway, *ho.add_store('other'))}"})
        assert other.status_code == 200
        assert hashlib.md5(other.content).hexdigest() == row["checksum"]
    finally:
        for sock in held:
            sock.close()
        gateway.stop()


def test_slow_clients_do_not_delay_a_sync(gw, make_edge):
    """More header-tricklers than gunicorn has threads (2 x 8): nginx holds them, gunicorn
    never sees them, so the agent (10 s timeout, 2 retries) still syncs."""
    stop = threading.Event()
    sockets = []
    for _ in range(24):
        sock = socket.create_connection(("127.0.0.1", gw.gateway.https_port), timeout=5)
        sockets.append(ssl.create_default_context(cafile=str(gw.gateway.tls.ca_path))
                       .wrap_socket(sock, server_hostname="127.0.0.1"))

    def trickle():
        deadline = time.monotonic() + 60
        for byte in (b"GET /api/v1/health/ HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200):
            if stop.is_set() or time.monotonic() > deadline:
                return
            for sock in sockets:
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    pass
            stop.wait(0.5)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        edge = _edge(make_edge, gw)
        result, summary = edge.pull("full")
        assert result.returncode == 0, result.stderr
        assert summary["failed"] == 0
        assert_edge_matches_ho(edge, gw.ho)
    finally:
        stop.set()
        thread.join(5)
        for sock in sockets:
            sock.close()


def test_api_down_or_silent_is_json_502_and_504(bed_root, s3):
    dead = f"127.0.0.1:{testbed.free_port()}"
    # A socket that is listened on but never accepted: connects, then silence.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    gateways = {
        502: gw_support.Gateway(bed_root / "gateway-dead", [dead], s3.endpoint, "none"),
        504: gw_support.Gateway(bed_root / "gateway-silent",
                                [f"127.0.0.1:{silent.getsockname()[1]}"], s3.endpoint, "none",
                                ho_gateway_proxy_read_timeout="1s"),
    }
    try:
        for status, gateway in gateways.items():
            gateway.start()
            got = _client(gateway).get(f"{gateway.url}{API_PREFIX}/health/", timeout=20)
            assert got.status_code == status
            assert got.headers["Content-Type"] == "application/json"
            assert set(got.json()) == {"error", "detail"}
            assert got.json()["error"] == {502: "bad_gateway", 504: "gateway_timeout"}[status]
    finally:
        for gateway in gateways.values():
            gateway.stop()
        silent.close()


def test_sync_completes_when_one_of_two_api_hosts_dies(gw, make_edge, bed_root):
    second = testbed.HOServer(bed_root / "gateway-api2", gw.ho.env).start()
    gateway = gw_support.Gateway(
        bed_root / "gateway-two", [f"127.0.0.1:{gw.ho.server.port}", f"127.0.0.1:{second.port}"],
        gw.s3.endpoint, gw.ho.env["PHOTO_SYNC_HO_S3_BUCKET"], tls=gw.gateway.tls).start()
    try:
        # No retries in the agent: every request that reached the dead host must have been
        # moved to the live one by nginx (proxy_next_upstream), or a photo fails.
        edge = make_edge(gw.ho, ho_url=gateway.url, ca_bundle=str(gateway.tls.ca_path),
                         concurrency=2, retries=0)
        pull = subprocess.Popen([str(BIN / "photo-sync-edge"), "pull", "--mode", "full", "--json"],
                                env={**os.environ, **edge.env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Kill the second API host as soon as it has served a download (or after 10 s).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _api_download_lines(second):
            time.sleep(0.05)
        served_before_kill = len(_api_download_lines(second))
        os.killpg(second.process.pid, signal.SIGKILL)
        second.process.wait(5)
        out, err = pull.communicate(timeout=180)
        assert pull.returncode == 0, err
        summary = json.loads(out)
        assert summary["failed"] == 0 and summary["downloaded"] == len(ho_live_photos(gw.ho))
        assert_edge_matches_ho(edge, gw.ho)
        assert served_before_kill >= 1, "the second host took part before it died"
    finally:
        second.stop()
        gateway.stop()


def test_presigned_downloads_through_the_gateway(gw, make_edge, bed_root):
    """PRESIGNED_DOWNLOADS with S3_PUBLIC_ENDPOINT=https://<gateway>: the listing's URLs
    point at the gateway, which hands them to S3 with the Host they were signed for."""
    gateway = gw_support.Gateway(bed_root / "gateway-presign", [], gw.s3.endpoint,
                                 gw.ho.env["PHOTO_SYNC_HO_S3_BUCKET"], tls=gw.gateway.tls)
    api = testbed.HOServer(bed_root / "gateway-presign-api", {
        **gw.ho.env, "PHOTO_SYNC_HO_PRESIGNED_DOWNLOADS": "true",
        "PHOTO_SYNC_HO_S3_PUBLIC_ENDPOINT": gateway.url}).start()
    gateway.values["ho_gateway_api_upstreams"] = [f"127.0.0.1:{api.port}"]
    gateway.start()
    try:
        edge = make_edge(gw.ho, ho_url=gateway.url, ca_bundle=str(gateway.tls.ca_path),
                         presigned_origin=gateway.url)
        result, summary = edge.pull("full")
        assert result.returncode == 0, result.stderr
        assert summary["failed"] == 0
        assert_edge_matches_ho(edge, gw.ho)
        assert not _api_download_lines(api), "every photo came from S3 through the gateway"
        bucket = gw.ho.env["PHOTO_SYNC_HO_S3_BUCKET"]
        from_s3 = [e for e in gateway.access_entries()
                   if e["path"].startswith(f"/{bucket}/") and e["status"] == 200]
        assert len(from_s3) == summary["downloaded"] == len(ho_live_photos(gw.ho))
        put = _client(gateway).put(f"{gateway.url}/{bucket}/x", data=b"x", timeout=10)
        assert put.status_code == 403, "the bucket location is read-only"
    finally:
        gateway.stop()
        api.stop()


def test_a_presign_for_the_internal_redirect_does_not_work_from_outside(gw):
    # Fails on the old template: the bucket location forwarded the client's Host, so a URL
    # signed for S3's own host (what the API puts in X-Accel-Redirect) fetched the photo.
    from minio import Minio
    import datetime as dt
    import urllib.parse
    row = _first_photo(gw.ho)
    s3 = Minio(gw.s3.endpoint, gw.s3.access_key, gw.s3.secret_key, secure=False,
               region="us-east-1")
    internal = urllib.parse.urlsplit(s3.presigned_get_object(
        gw.ho.env["PHOTO_SYNC_HO_S3_BUCKET"], row["object_key"], expires=dt.timedelta(minutes=5)))
    assert requests.get(internal.geturl(), timeout=10).status_code == 200, "a valid presign"
    got = _client(gw.gateway).get(f"{gw.gateway.url}{internal.path}?{internal.query}",
                                  headers={"Host": gw.s3.endpoint}, timeout=10)
    assert got.status_code == 403, got.status_code
    assert hashlib.md5(got.content).hexdigest() != row["checksum"]


def test_s3_over_https_is_verified_with_sni_in_both_s3_locations(bed_root):
    # Fails on the old template: no proxy_ssl_verify (nginx's default is off), and the
    # bucket location sent no SNI.
    gateway = gw_support.Gateway(bed_root / "gateway-s3-tls", ["127.0.0.1:9"], "s3.example:443",
                                 "photos", ho_gateway_s3_scheme="https",
                                 ho_gateway_s3_upstream="127.0.0.1:9443")
    gateway.values["ho_gateway_s3_ca_path"] = str(gateway.tls.ca_path)
    text = gateway.write_config().read_text()  # nginx -t accepts it
    for directive in ("proxy_ssl_verify on;", f"proxy_ssl_trusted_certificate "
                      f"{gateway.tls.ca_path};", "proxy_ssl_server_name on;",
                      "proxy_ssl_name s3.example;"):
        assert text.count(directive) == 2, directive


def test_access_log_holds_no_credentials(gw):
    """Tokens, secrets and presigned signatures are never in the gateway's logs."""
    store_id, secret = gw.ho.add_store("logged")
    token = _token(gw.gateway, store_id, secret)
    row = _first_photo(gw.ho)
    client = _client(gw.gateway)
    got = client.get(f"{gw.gateway.url}{API_PREFIX}/sync/product-photos/{row['id']}/download/",
                     params={"store_id": store_id}, timeout=10,
                     headers={"Authorization": f"Bearer {token}"})
    assert got.status_code == 200
    bucket = gw.ho.env["PHOTO_SYNC_HO_S3_BUCKET"]
    client.get(f"{gw.gateway.url}/{bucket}/{row['object_key']}", timeout=10,
               params={"X-Amz-Signature": "f" * 64, "X-Amz-Credential": "testkey"})
    deadline = time.monotonic() + 5  # a request is logged when it ends
    while time.monotonic() < deadline and f"/{bucket}/" not in gw.gateway.access_log.read_text():
        time.sleep(0.05)
    text = "\n".join(path.read_text() for path in gw.gateway.root.glob("*.log"))
    assert token not in text and token.split(".")[2] not in text
    assert "/download/" in text
    assert "Bearer" not in text and "X-Amz-Signature" not in text
    assert "eyJ" not in text, "no JWT (base64 JSON) in any gateway log"
    for secret in gw.ho.stores.values():
        assert secret not in text


def _handshake(gateway, version: ssl.TLSVersion) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(gateway.tls.ca_path))
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.minimum_version = context.maximum_version = version
    with socket.create_connection(("127.0.0.1", gateway.https_port), timeout=5) as sock:
        try:
            with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                return tls.version()
        except ssl.SSLError as exc:
            return f"refused: {exc}"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_below_1_2_is_refused_and_http_redirects(gw):
    assert _handshake(gw.gateway, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert _handshake(gw.gateway, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    refused = _handshake(gw.gateway, ssl.TLSVersion.TLSv1_1)
    assert refused.startswith("refused") and "PROTOCOL_VERSION" in refused.upper(), refused

    plain = requests.get(f"http://127.0.0.1:{gw.gateway.http_port}{API_PREFIX}/health/",
                         timeout=10, allow_redirects=False)
    assert plain.status_code == 301
    assert plain.headers["Location"] == f"{gw.gateway.url}{API_PREFIX}/health/"
    closed = gw_support.render({"ho_gateway_http_redirect": False, "ho_gateway_http_port": 8123})
    assert ":8123" not in closed, "no plain http listener at all when the redirect is off"


@pytest.mark.parametrize("endpoint, ok", [
    ("127.0.0.1:9000", True), ("https://ho-gateway.example", True),
    ("https://ho-gateway.example:8443/", True), ("ftp://ho-gateway.example", False),
    ("https://ho-gateway.example/photos", False), ("https://", False)])
def test_public_endpoint_names_a_host_or_an_origin(endpoint, ok):
    """S3_PUBLIC_ENDPOINT: host:port or http(s)://host:port; anything else is a ConfigError
    at start-up, not a broken URL in every listing."""
    from photo_sync.config import ConfigError
    from photo_sync.ho.settings import HOSettings
    env = {"PHOTO_SYNC_HO_S3_PUBLIC_ENDPOINT": endpoint}
    if ok:
        assert HOSettings.load(environ=env, need_jwt=False, need_s3=False,
                               need_database=False).s3_public_endpoint == endpoint
    else:
        with pytest.raises(ConfigError, match="S3_PUBLIC_ENDPOINT"):
            HOSettings.load(environ=env, need_jwt=False, need_s3=False, need_database=False)


def test_presigned_urls_take_the_public_endpoints_scheme():
    """HO talks plain http to S3 while stores get https URLs of the gateway (signing needs
    no network: the region is given)."""
    from photo_sync.ho.storage import Storage
    storage = Storage("127.0.0.1:9", "key", "secret" * 4, "photos",
                      public_endpoint="https://ho-gateway.example:8443")
    assert storage.presign("a/b c.jpg", 60).startswith(
        "https://ho-gateway.example:8443/photos/a/b%20c.jpg?X-Amz-Algorithm=")
    assert storage.presign_path("a/b c.jpg", 60).startswith("/photos/a/b%20c.jpg?")
