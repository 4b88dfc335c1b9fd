"""The edge agent against a broken or hostile HO (issue 8): memory, time and TLS stay
bounded whatever HO sends.

The agent runs as a process (`photo-sync-edge pull`) against the store's PostgreSQL from
the test bed and a hostile HO (tests/support/hostile_ho.py, a real HTTP server on 127.0.0.1).
Its peak RSS is the kernel's own account (`ru_maxrss` of a fresh wrapper's children), so
no spike between samples is missed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import BIN, Edge
from support.hostile_ho import HostileHO

RSS_LIMIT_MB = 150
RUN_TIMEOUT = 240  # seconds any one agent run may take before the test kills it


@pytest.fixture
def store(pg):
    """A store database with the edge schema, not registered anywhere: `store(ho_url, **env)`
    makes its Edge (the hostile HO accepts any credentials)."""
    url = pg.create_db(f"edge_hostile_{uuid.uuid4().hex[:12]}")

    def make(ho_url: str, **env) -> Edge:
        edge_env = {
            "PHOTO_SYNC_EDGE_DATABASE_URL": url,
            "PHOTO_SYNC_EDGE_HO_URL": ho_url,
            "PHOTO_SYNC_EDGE_STORE_ID": str(uuid.uuid4()),
            "PHOTO_SYNC_EDGE_STORE_SECRET": "hostile-test-secret",
            "PHOTO_SYNC_EDGE_RETRIES": "1",
            "PHOTO_SYNC_EDGE_TIMEOUT": "10",
            "PHOTO_SYNC_EDGE_CONCURRENCY": "4",
        }
        edge_env.update({f"PHOTO_SYNC_EDGE_{k.upper()}": str(v) for k, v in env.items()})
        edge = Edge(None, edge_env["PHOTO_SYNC_EDGE_STORE_ID"], "", url, edge_env)
        result = edge.cli("schema", "apply")
        assert result.returncode == 0, result.stderr
        return edge

    return make


_MEASURE = ("import resource, subprocess, sys\n"
            "code = subprocess.call(sys.argv[1:])\n"
            "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
            " file=sys.stderr)\n"
            "sys.exit(code)\n")


def measured_pull(edge: Edge, mode: str = "incremental", timeout: float = RUN_TIMEOUT):
    """Run `photo-sync-edge pull --json` as a process: (exit code, summary or None, stderr,
    peak RSS in MB). Killed with its process group when it outlives `timeout`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _MEASURE, str(BIN / "photo-sync-edge"), "pull", "--mode", mode,
         "--json"], env={**os.environ, **edge.env}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"the agent still ran after {timeout} s: {err[-2000:]}") from None
    rss_lines = [line for line in err.splitlines() if line.startswith("MAXRSS_KB ")]
    assert rss_lines, err
    peak_mb = int(rss_lines[-1].split()[1]) / 1024
    summary = json.loads(out) if out.strip().startswith("{") else None
    return proc.returncode, summary, err, peak_mb


def failure_of(summary: dict, photo_id: str) -> str:
    reasons = [f["error"] for f in summary["failures"] if f["photo_id"] == photo_id]
    assert reasons, (photo_id, summary["failures"])
    return reasons[0]


def held(edge: Edge, photo_id: str):
    """(sync_status, md5 of the bytes held or None)."""
    _, _, status, data = edge.photos()[photo_id]
    return status, hashlib.md5(data).hexdigest() if data is not None else None


# 1. Memory ------------------------------------------------------------------------------

def test_bodies_past_their_limit_are_cut_and_memory_stays_bounded(store):
    """A body running far past its listed size, a Content-Length far above it, a gzip bomb,
    an encoding the agent does not decode, and an endless body for a photo listed just under
    MAX_PHOTO_BYTES: each fails alone with a reason naming its limit, the others sync (a
    gzipped body within its bound too), a photo the store held keeps its good bytes, and the
    agent's peak RSS stays under 150 MB throughout.

    Before issue 8 the agent read such bodies to the end (and inflated gzip without bound):
    hundreds of MB, then a second copy when the chunks were joined."""
    with HostileHO() as ho:
        kept = ho.add_photo(40 * 1024)
        others = [ho.add_photo(30 * 1024) for _ in range(4)]
        edge = store(ho.url, max_photo_bytes=45 * 1024 * 1024)
        code, summary, err, peak = measured_pull(edge)
        assert code == 0 and summary["downloaded"] == 5, err
        good_md5 = kept["checksum"]
        assert held(edge, kept["id"]) == ("synced", good_md5)

        # HO lists a new version of `kept` and sends a body that never ends.
        ho.add_photo(40 * 1024, "endless", photo_id=kept["id"], version=2)
        bomb = ho.add_photo(30 * 1024, "gzip_bomb")
        announced = ho.add_photo(30 * 1024, "long_cl")
        at_cap = ho.add_photo(behaviour="endless", data=os.urandom(1024),
                              listed_size=44 * 1024 * 1024 + 12345)
        brotli = ho.add_photo(30 * 1024, "brotli")
        # Gzip within the bound is inflated (an HO behind a proxy that compresses anyway).
        fresh = [ho.add_photo(30 * 1024) for _ in range(2)] + [ho.add_photo(30 * 1024, "gzip")]
        code, summary, err, peak = measured_pull(edge)

    assert peak < RSS_LIMIT_MB, f"agent peak RSS {peak:.0f} MB"
    assert code == 1, err
    assert summary["failed"] == 5 and summary["downloaded"] == 3, summary
    endless_reason = failure_of(summary, kept["id"])
    assert "body too large" in endless_reason and f"{40 * 1024} bytes" in endless_reason
    assert "its listed size" in endless_reason and "cut off" in endless_reason
    bomb_reason = failure_of(summary, bomb["id"])
    assert "body too large" in bomb_reason and f"{30 * 1024} bytes" in bomb_reason
    announced_reason = failure_of(summary, announced["id"])
    assert "Content-Length" in announced_reason and "refused unread" in announced_reason
    assert "body too large" in failure_of(summary, at_cap["id"])
    assert "Content-Encoding 'br'" in failure_of(summary, brotli["id"])
    # The old bytes of the photo whose new version failed are untouched.
    assert held(edge, kept["id"]) == ("failed", good_md5)
    for photo in others + fresh:
        assert held(edge, photo["id"]) == ("synced", photo["checksum"])
    for photo in (bomb, announced, at_cap, brotli):
        assert held(edge, photo["id"]) == ("failed", None)


def test_photo_listed_above_max_photo_bytes_is_not_downloaded(store):
    with HostileHO() as ho:
        big = ho.add_photo(200 * 1024)
        small = ho.add_photo(20 * 1024)
        edge = store(ho.url, max_photo_bytes=100 * 1024)
        code, summary, err, _ = measured_pull(edge)
        assert ho.downloads(big["id"]) == 0, "a photo listed above the cap is never fetched"
        assert ho.downloads(small["id"]) == 1
    assert code == 1, err
    reason = failure_of(summary, big["id"])
    assert "PHOTO_SYNC_EDGE_MAX_PHOTO_BYTES=102400" in reason and "not downloaded" in reason
    assert held(edge, small["id"]) == ("synced", small["checksum"])


def test_a_huge_list_page_is_cut_off_and_the_run_stops_cleanly(store):
    with HostileHO() as ho:
        photo = ho.add_photo(20 * 1024)
        edge = store(ho.url, page_size=100)
        code, summary, err, _ = measured_pull(edge)
        assert code == 0, err
        ho.page_behaviour = "huge"
        code, summary, err, peak = measured_pull(edge)
    assert peak < RSS_LIMIT_MB, f"agent peak RSS {peak:.0f} MB"
    assert code == 4, err
    cap = 1024 * 1024 + 100 * 16 * 1024
    assert f"sent a photo list page of more than the {cap} bytes" in err and "cut off" in err
    assert held(edge, photo["id"]) == ("synced", photo["checksum"])


# 2. Time --------------------------------------------------------------------------------

def test_a_trickling_photo_fails_alone_at_its_deadline(store):
    """One photo sent at 1 KB/s: cut at TIMEOUT + size / MIN_RATE (2 + 20480/4096 = 7 s),
    failed alone with the deadline, the bytes received and the setting in its reason; the
    others sync and the run exits 1. Before issue 8 it held the run for as long as it
    trickled (the socket read timeout never fires on a steady trickle)."""
    with HostileHO() as ho:
        slow = ho.add_photo(20 * 1024, "trickle")
        others = [ho.add_photo(30 * 1024) for _ in range(4)]
        edge = store(ho.url, timeout=2, min_rate=4096, retries=0)
        code, summary, err, _ = measured_pull(edge, timeout=120)
    assert code == 1, err
    assert summary["failed"] == 1 and summary["downloaded"] == 4, summary
    reason = failure_of(summary, slow["id"])
    assert "deadline exceeded" in reason and "took longer than its 7 s" in reason
    assert "PHOTO_SYNC_EDGE_MIN_RATE=4096" in reason
    received = int(reason.split(" of 20480 bytes had arrived")[0].rsplit(" ", 1)[1])
    assert 0 < received < 20480
    for photo in others:
        assert held(edge, photo["id"]) == ("synced", photo["checksum"])


def test_a_trickling_list_page_ends_the_run_with_exit_4(store):
    """The feed page's body trickles in: the run stops when the page falls behind MIN_RATE
    (after TIMEOUT), not when HO stops sending."""
    with HostileHO() as ho:
        ho.add_photo(20 * 1024)
        ho.page_behaviour = "trickle"
        edge = store(ho.url, timeout=2, min_rate=4096, retries=0)
        code, summary, err, _ = measured_pull(edge, timeout=120)
    assert code == 4, err
    assert "sent a photo list page too slowly" in err and "PHOTO_SYNC_EDGE_MIN_RATE=4096" in err


def test_headers_trickling_in_count_as_no_answer(store):
    """HO sends its headers one line every half second: the socket read timeout never
    fires, the attempt's deadline does (TIMEOUT), and the run ends with exit 4 after its
    retries instead of waiting for HO."""
    with HostileHO() as ho:
        ho.add_photo(20 * 1024)
        ho.page_behaviour = "trickle_headers"
        edge = store(ho.url, timeout=2, retries=1)
        code, summary, err, _ = measured_pull(edge, timeout=120)
        page_requests = ho.hits["/api/v1/sync/product-photos/"]
    assert code == 4, err
    assert "no answer within PHOTO_SYNC_EDGE_TIMEOUT=2 s) after 2 tries" in err
    assert page_requests == 2


def test_download_deadline_formula():
    from photo_sync.edge.client import download_deadline
    assert download_deadline(16384 * 10, timeout=60, min_rate=16384) == 70
    # With a 100 kB/s cap shared by 8 downloads a 1 MB photo needs 80 s: it gets them.
    assert download_deadline(1_000_000, timeout=60, min_rate=16384, bandwidth_limit=100_000,
                             concurrency=8) == 60 + 80


# 3. TLS and presigned URLs ---------------------------------------------------------------

def _throwaway_ca(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA (its PEM in `folder`) and a server context with a certificate it signed for
    127.0.0.1 (the gateway tests' TLS material)."""
    from support.gateway import TLSMaterial

    tls = TLSMaterial(folder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert_path, tls.key_path)
    return tls.ca_path, context


def test_tls_is_verified_against_the_ca_bundle(store, tmp_path):
    ca_file, context = _throwaway_ca(tmp_path)
    with HostileHO(tls=context) as ho:
        photo = ho.add_photo(20 * 1024)
        edge = store(ho.url)
        # Without the bundle: the system CAs (and REQUESTS_CA_BUNDLE) do not know this CA.
        code, _, err, _ = measured_pull(edge)
        assert code == 4, err
        assert "certificate verify failed" in err and "PHOTO_SYNC_EDGE_CA_BUNDLE" in err
        assert ho.downloads(photo["id"]) == 0
        edge.env["PHOTO_SYNC_EDGE_CA_BUNDLE"] = str(ca_file)
        code, summary, err, _ = measured_pull(edge)
    assert code == 0, err
    assert held(edge, photo["id"]) == ("synced", photo["checksum"])


@pytest.mark.parametrize("env, message", [
    ({"PHOTO_SYNC_EDGE_HO_URL": "http://192.0.2.1:8443"}, "PHOTO_SYNC_EDGE_ALLOW_HTTP=true"),
    ({"PHOTO_SYNC_EDGE_PRESIGNED_ORIGIN": "http://192.0.2.1:9000"},
     "PHOTO_SYNC_EDGE_PRESIGNED_ORIGIN='http://192.0.2.1:9000' uses http://"),
    ({"PHOTO_SYNC_EDGE_PRESIGNED_ORIGIN": "https://s3.example:9000/bucket"}, "is not an origin"),
    ({"PHOTO_SYNC_EDGE_CA_BUNDLE": "/nonexistent/ca.pem"}, "cannot be read"),
    ({"PHOTO_SYNC_EDGE_MAX_PHOTO_BYTES": "0"}, "below the minimum 1"),
], ids=["http-ho", "http-s3", "origin-with-path", "ca-missing", "max-bytes-0"])
def test_transport_configuration_errors_exit_2_before_connecting(store, env, message):
    edge = store("http://127.0.0.1:9")
    started = time.monotonic()
    result = edge.cli("pull", extra_env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 60


def test_ca_bundle_without_a_certificate_is_a_config_error(store, tmp_path):
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("hello\n")
    edge = store("http://127.0.0.1:9")
    result = edge.cli("pull", timeout=60, extra_env={"PHOTO_SYNC_EDGE_CA_BUNDLE": str(not_pem)})
    assert result.returncode == 2 and "holds no PEM certificate" in result.stderr


def test_http_to_a_remote_ho_is_allowed_only_when_asked():
    from photo_sync.edge.settings import EdgeSettings
    env = {"PHOTO_SYNC_EDGE_DATABASE_URL": "postgresql:///unused",
           "PHOTO_SYNC_EDGE_STORE_ID": str(uuid.uuid4()), "PHOTO_SYNC_EDGE_STORE_SECRET": "s",
           "PHOTO_SYNC_EDGE_HO_URL": "http://192.0.2.1:8443"}
    with pytest.raises(Exception, match="PHOTO_SYNC_EDGE_ALLOW_HTTP=true"):
        EdgeSettings.load(environ=env)
    assert EdgeSettings.load(environ={**env, "PHOTO_SYNC_EDGE_ALLOW_HTTP": "true"}).allow_http
    for loopback in ("http://localhost:8000", "http://127.0.0.2:8000", "http://[::1]:8000"):
        assert EdgeSettings.load(environ={**env, "PHOTO_SYNC_EDGE_HO_URL": loopback}
                                 ).ho_url == loopback
    settings = EdgeSettings.load(environ={**env, "PHOTO_SYNC_EDGE_HO_URL": "https://ho.example"})
    assert settings.presigned is False, "no presigned URLs without PRESIGNED_ORIGIN"
    assert (settings.max_photo_bytes, settings.min_rate) == (50 * 1024 * 1024, 16384)


def test_presigned_urls_only_from_the_configured_origin_and_never_redirected(store):
    """Presigned URLs pointing elsewhere, or redirecting elsewhere, are never fetched from
    there: those photos come through the API. Those on the configured origin come from it."""
    with HostileHO() as elsewhere, HostileHO() as ho:
        ho.redirect_to = elsewhere.url
        photos = {}
        # In feed order: redirects, then the origin's own, then elsewhere (the engine stops
        # trying presigned URLs after a few failures; the origin's come before that).
        for kind in ("redirect", "origin", "elsewhere"):
            for _ in range(2):
                data = os.urandom(20 * 1024)
                photo_id = str(uuid.uuid4())
                elsewhere.add_photo(data=data, photo_id=photo_id)
                base = elsewhere.url if kind == "elsewhere" else ho.url
                photos[photo_id] = (kind, ho.add_photo(
                    data=data, photo_id=photo_id,
                    download_url=f"{base}/s3/{photo_id}?X-Amz-Signature=x",
                    behaviour="redirect" if kind == "redirect" else "ok"))
        # Concurrency 1 keeps the feed order.
        edge = store(ho.url, presigned_origin=ho.url, concurrency=1)
        code, summary, err, _ = measured_pull(edge)
        assert code == 0, err
        assert sum(elsewhere.hits.values()) == 0, f"fetched elsewhere: {elsewhere.hits}"
        for photo_id, (kind, item) in photos.items():
            assert held(edge, photo_id) == ("synced", item["checksum"])
            via_api = ho.downloads(photo_id)
            via_s3 = ho.hits[f"/s3/{photo_id}"]
            if kind == "elsewhere":
                assert (via_api, via_s3) == (1, 0), kind
            elif kind == "redirect":
                assert (via_api, via_s3) == (1, 1), kind
            else:
                assert (via_api, via_s3) == (0, 1), kind


def test_presigned_urls_are_not_used_without_an_origin(store):
    with HostileHO() as ho:
        photo_id = str(uuid.uuid4())
        item = ho.add_photo(20 * 1024, photo_id=photo_id,
                            download_url=f"{ho.url}/s3/{photo_id}?X-Amz-Signature=x")
        edge = store(ho.url)
        code, summary, err, _ = measured_pull(edge)
        assert code == 0, err
        assert (ho.downloads(photo_id), ho.hits[f"/s3/{photo_id}"]) == (1, 0)
    assert held(edge, photo_id) == ("synced", item["checksum"])
