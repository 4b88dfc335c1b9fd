"""Signed links, the deployed default behind the gateway: the listing carries a /signed/ link
per photo, nginx checks its mac and expiry itself and serves the bytes from S3, and the API
sees no request per photo. Real nginx (the role's template), real gunicorn, real SeaweedFS.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import urllib.parse
import uuid
from types import SimpleNamespace

import pytest
import requests

from conftest import assert_edge_matches_ho, assert_no_bad_bytes
from support import gateway as gw_support
from support import testbed
from photo_sync.edge.client import HOClient
from photo_sync.edge.engine import SyncRun
from photo_sync.edge.settings import EdgeSettings
from photo_sync.ho import links
from photo_sync.protocol import API_PREFIX

pytestmark = pytest.mark.skipif(gw_support.nginx_missing() is not None,
                                reason=gw_support.nginx_missing() or "")

SECRET = secrets.token_hex(32)
SIGNED = {"PHOTO_SYNC_HO_SIGNED_LINK_SECRET": SECRET, "PHOTO_SYNC_HO_TRUSTED_PROXIES": "1",
          "PHOTO_SYNC_HO_ACCEL_REDIRECT": "true"}


def _get(gateway, path: str, **kwargs) -> requests.Response:
    # verify per request: REQUESTS_CA_BUNDLE from the environment wins over a session's.
    return requests.get(f"{gateway.url}{path}", timeout=30, verify=str(gateway.tls.ca_path),
                        **kwargs)


def _token(gateway, store_id: str, secret: str) -> str:
    response = requests.post(f"{gateway.url}{API_PREFIX}/auth/token/", timeout=10,
                             verify=str(gateway.tls.ca_path),
                             json={"store_id": store_id, "secret": secret})
    assert response.status_code == 200, response.text
    return response.json()["access"]


def _listing(gateway, token: str) -> list[dict]:
    response = _get(gateway, f"{API_PREFIX}/sync/product-photos/",
                    headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.json()["photos"]


def _api_photo_requests(ho) -> int:
    """Requests for one photo's bytes gunicorn logged (the download endpoint)."""
    return len(re.findall(r'"(?:GET|HEAD) \S*/download/', ho.server.log_path.read_text()))


def _resign(link: str, expires: int, store: str | None = None, secret: str = SECRET) -> str:
    """`link` signed again with another expiry (and store): what HO would have signed then."""
    path, _, query = link.partition("?")
    parts = path.split("/")  # "", "signed", store, expires, mac, md5, sha256, version, ...
    store = store or parts[2]
    rest = "/" + "/".join(parts[5:])
    code = links.mac(secret, store, expires, urllib.parse.unquote(rest))
    return f"/signed/{store}/{expires}/{code}{rest}?{query}"


@pytest.fixture(scope="module")
def sg(ho_stack, photo_factory, s3, bed_root):
    """One HO signing links behind one gateway holding the same secret, 16 photos."""
    ho = ho_stack("signed", extra_env=SIGNED)
    ho.import_dir(photo_factory(16, seed=301, min_kb=20, max_kb=200, mean_kb=80))
    gateway = gw_support.Gateway(bed_root / "gateway-signed", [f"127.0.0.1:{ho.server.port}"],
                                 s3.endpoint, ho.env["PHOTO_SYNC_HO_S3_BUCKET"],
                                 ho_gateway_signed_link_secret=SECRET).start()
    yield SimpleNamespace(ho=ho, gateway=gateway)
    gateway.stop()


def _edge(make_edge, sg, **env):
    return make_edge(sg.ho, ho_url=sg.gateway.url, ca_bundle=str(sg.gateway.tls.ca_path),
                     **env)


def test_a_store_syncs_through_signed_links_and_the_api_serves_no_photo(sg, make_edge):
    edge = _edge(make_edge, sg)
    before = _api_photo_requests(sg.ho)
    result, summary = edge.pull("full")
    assert result.returncode == 0, result.stderr
    assert summary["downloaded"] == 16 and summary["failed"] == 0
    assert_edge_matches_ho(edge, sg.ho)
    assert_no_bad_bytes(edge)
    assert _api_photo_requests(sg.ho) == before, "no photo request reached the API"
    served = [e for e in sg.gateway.access_entries()
              if e["path"].startswith("/signed/") and e["status"] == 200]
    assert len(served) >= 16 and all(e["bytes"] > 1000 for e in served)
    # The log keeps the path (which names no secret) and never the S3 signature.
    assert "X-Amz-Signature" not in sg.gateway.access_log.read_text()


def test_a_signed_link_answers_like_the_api_download(sg):
    store_id, secret = sg.ho.add_store("headers")
    photo = _listing(sg.gateway, _token(sg.gateway, store_id, secret))[0]
    assert photo["signed_url"].startswith(f"/signed/{store_id}/")
    assert photo["signed_url_expires"] > time.time()
    response = _get(sg.gateway, photo["signed_url"])
    assert response.status_code == 200
    assert hashlib.md5(response.content).hexdigest() == photo["checksum"]
    assert response.headers["X-Checksum"] == photo["checksum"]
    assert response.headers["X-Version"] == str(photo["version"])
    assert response.headers["ETag"] == f'"{photo["checksum"]}"'
    assert "Seaweed-X-Amz-ETag" not in response.headers
    assert _get(sg.gateway, photo["signed_url"], allow_redirects=False).status_code == 200
    assert requests.post(f"{sg.gateway.url}{photo['signed_url']}", timeout=10,
                         verify=str(sg.gateway.tls.ca_path)).status_code == 405


def test_tampered_or_expired_links_are_refused_by_nginx(sg):
    store_id, secret = sg.ho.add_store("tamper")
    other_store, _ = sg.ho.add_store("victim")
    photos = _listing(sg.gateway, _token(sg.gateway, store_id, secret))
    link, expires = photos[0]["signed_url"], photos[0]["signed_url_expires"]
    before = _api_photo_requests(sg.ho)
    # Another store's id in the path (to spend its cap): the mac no longer matches.
    forged = link.replace(f"/signed/{store_id}/", f"/signed/{other_store}/", 1)
    # A later expiry, another photo's checksum, a mac from another secret.
    later = link.replace(f"/{expires}/", f"/{expires + 86400}/", 1)
    other_md5 = photos[1]["checksum"]
    swapped = link.replace(f"/{photos[0]['checksum']}/", f"/{other_md5}/", 1)
    foreign = _resign(link, expires, secret=secrets.token_hex(32))
    for bad in (forged, later, swapped, foreign):
        response = _get(sg.gateway, bad)
        assert response.status_code == 403, bad
        assert response.json()["error"] == "invalid_link"
        assert response.headers["Content-Type"] == "application/json"
    # Correctly signed, but its time is past.
    expired = _get(sg.gateway, _resign(link, int(time.time()) - 1))
    assert expired.status_code == 410
    assert expired.json()["error"] == "link_expired"
    assert _api_photo_requests(sg.ho) == before


class StaleFirstListing(HOClient):
    """The agent's client, but the first page it lists was signed a TTL ago: its links are
    the real links of that page, each signed again with an expiry already past."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.listed = 0

    def list_page(self, **kwargs) -> dict:
        body = super().list_page(**kwargs)
        self.listed += 1
        if self.listed == 1:
            for item in body["photos"]:
                if item.get("signed_url"):
                    item["signed_url"] = _resign(item["signed_url"], int(time.time()) - 60)
        return body


def test_an_expired_link_mid_run_relists_its_page_and_the_run_completes(sg, make_edge):
    edge = _edge(make_edge, sg, concurrency=4)
    settings = EdgeSettings.load(environ=edge.env)
    client = StaleFirstListing.from_settings(settings)
    before = _api_photo_requests(sg.ho)
    try:
        summary = SyncRun(settings, "full", client=client).execute()
    finally:
        client.close()
    assert summary.status == "ok", summary.error
    assert summary.downloaded == 16 and summary.failed == 0
    assert_edge_matches_ho(edge, sg.ho)
    # The stale page was listed again once (16 photos fit the first page), and its fresh
    # links served every photo: none went through the API.
    assert client.listed == 2
    assert _api_photo_requests(sg.ho) == before
    refused = [e for e in sg.gateway.access_entries()
               if e["path"].startswith("/signed/") and e["status"] == 410]
    assert refused, "the stale links reached nginx and were refused as expired"


def test_a_photo_changed_since_its_stale_listing_is_not_fetched_by_its_new_link(
        ho_stack, photo_factory, s3, bed_root, make_edge):
    """Between the stale listing and the fresh one a photo got new bytes at HO: its fresh link
    names other bytes than the ones the run checks against, so that photo comes through the
    API (whose headers name what it sends) and the others through their fresh links."""
    ho = ho_stack("signed-changed", extra_env=SIGNED)
    folder = photo_factory(4, seed=304, min_kb=20, max_kb=40, mean_kb=30)
    ho.import_dir(folder)
    gateway = gw_support.Gateway(bed_root / "gateway-changed", [f"127.0.0.1:{ho.server.port}"],
                                 s3.endpoint, ho.env["PHOTO_SYNC_HO_S3_BUCKET"],
                                 ho_gateway_signed_link_secret=SECRET).start()
    changed = sorted(folder.rglob("*.jpg"))[0]

    class ChangedAfterListing(StaleFirstListing):
        def list_page(self, **kwargs) -> dict:
            body = super().list_page(**kwargs)
            if self.listed == 1:
                # Smaller: the agent takes no more bytes than the listing announced.
                testbed.make_jpeg(changed, changed.stat().st_size // 2, seed=99)
                ho.import_dir(folder)
            return body

    try:
        edge = make_edge(ho, ho_url=gateway.url, ca_bundle=str(gateway.tls.ca_path),
                         concurrency=1)
        settings = EdgeSettings.load(environ=edge.env)
        client = ChangedAfterListing.from_settings(settings)
        try:
            summary = SyncRun(settings, "full", client=client).execute()
        finally:
            client.close()
        assert summary.status == "ok", summary.error
        assert summary.failed == 0, summary.failures
        assert_edge_matches_ho(edge, ho)
        assert _api_photo_requests(ho) == 1, "only the changed photo through the API"
    finally:
        gateway.stop()


def test_links_the_gateway_never_accepts_end_in_api_downloads_not_a_failed_run(
        ho_stack, photo_factory, s3, bed_root, make_edge):
    """HO and the gateway disagree on the secret (a rotation done on one side only): every
    link is refused, listing again does not help, and the photos come through the API."""
    ho = ho_stack("signed-skew", extra_env=SIGNED)
    ho.import_dir(photo_factory(6, seed=302, min_kb=20, max_kb=60, mean_kb=30))
    gateway = gw_support.Gateway(bed_root / "gateway-skew", [f"127.0.0.1:{ho.server.port}"],
                                 s3.endpoint, ho.env["PHOTO_SYNC_HO_S3_BUCKET"],
                                 ho_gateway_signed_link_secret=secrets.token_hex(32)).start()
    try:
        edge = make_edge(ho, ho_url=gateway.url, ca_bundle=str(gateway.tls.ca_path),
                         concurrency=2)
        result, summary = edge.pull("full")
        assert result.returncode == 0, result.stderr
        assert summary["downloaded"] == 6 and summary["failed"] == 0
        assert_edge_matches_ho(edge, ho)
        assert _api_photo_requests(ho) == 6, "each photo through the API's download"
        refused = [e for e in gateway.access_entries() if e["path"].startswith("/signed/")]
        assert refused and all(e["status"] == 403 for e in refused)
        # After a few refused fresh links the run stops trying links at all.
        assert len(refused) < 2 * 6
    finally:
        gateway.stop()


def test_the_per_store_cap_holds_on_signed_links_whatever_the_headers(
        ho_stack, s3, bed_root, tmp_path):
    ho = ho_stack("signed-conn", extra_env=SIGNED)
    testbed.make_jpeg(tmp_path / "big" / str(uuid.uuid4()) / "big.jpg", 12 * 1024 ** 2, 8)
    ho.import_dir(tmp_path / "big")
    gateway = gw_support.Gateway(bed_root / "gateway-signed-conn",
                                 [f"127.0.0.1:{ho.server.port}"], s3.endpoint,
                                 ho.env["PHOTO_SYNC_HO_S3_BUCKET"],
                                 ho_gateway_signed_link_secret=SECRET,
                                 ho_gateway_downloads_per_store=2).start()
    held = []
    try:
        busy = ho.add_store("busy")
        other = ho.add_store("other")
        busy_token, other_token = _token(gateway, *busy), _token(gateway, *other)
        link = _listing(gateway, busy_token)[0]["signed_url"]
        held = [gateway.slow_reader(link) for _ in range(2)]
        third = _get(gateway, link)
        assert third.status_code == 429
        assert third.json()["error"] == "too_many_requests"
        # The cap is keyed on the store under the mac, not on anything the request says:
        # another store's token, a made-up one, or another client address change nothing.
        for headers in ({"Authorization": f"Bearer {other_token}"},
                        {"Authorization": "Bearer forged"},
                        {"X-Forwarded-For": "192.0.2.7", "X-Photo-Sync-Store": other[0]}):
            assert _get(gateway, link, headers=headers).status_code == 429, headers
        # The API path shares the cap: the busy store's X-Accel download waits too.
        photo_id = _listing(gateway, busy_token)[0]["id"]
        accel = _get(gateway, f"{API_PREFIX}/sync/product-photos/{photo_id}/download/",
                     headers={"Authorization": f"Bearer {busy_token}"})
        assert accel.status_code == 429
        # Another store's own link is served at once.
        theirs = _get(gateway, _listing(gateway, other_token)[0]["signed_url"])
        assert theirs.status_code == 200
        assert hashlib.md5(theirs.content).hexdigest() == _listing(
            gateway, other_token)[0]["checksum"]
    finally:
        for sock in held:
            sock.close()
        gateway.stop()


def test_without_a_secret_the_listing_carries_no_links(ho_stack, photo_factory):
    ho = ho_stack("signed-off", extra_env={"PHOTO_SYNC_HO_ACCEL_REDIRECT": "true"})
    ho.import_dir(photo_factory(2, seed=303, min_kb=20, max_kb=30, mean_kb=25))
    store_id, secret = ho.add_store("plain")
    photos = ho.list_photos(ho.token(store_id, secret)).json()["photos"]
    assert photos and all("signed_url" not in p for p in photos)


@pytest.mark.parametrize("secret, ok", [("", True), ("x" * 32, True), ("short", False)])
def test_a_signed_link_secret_is_long_or_absent(secret, ok):
    from photo_sync.config import ConfigError
    from photo_sync.ho.settings import HOSettings

    def load():
        return HOSettings.load(environ={}, need_s3=False, need_database=False, need_jwt=False,
                               overrides={"SIGNED_LINK_SECRET": secret})
    if ok:
        assert load().signed_link_secret == secret
    else:
        with pytest.raises(ConfigError, match="SIGNED_LINK_SECRET"):
            load()
