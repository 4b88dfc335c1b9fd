"""Bytes that bypass the API: HO offers presigned S3 URLs, the store fetches from S3 (only
from PHOTO_SYNC_EDGE_PRESIGNED_ORIGIN, the S3 origin HO presigns for), verifies against the
catalog's checksums, and falls back to the API when S3 is out of reach."""

from __future__ import annotations

import requests

from conftest import assert_edge_matches_ho, assert_no_bad_bytes
from support import testbed


def _api_downloads(ho) -> int:
    return ho.server.log_path.read_text().count("/download/")


def _s3_origin(ho) -> str:
    """The origin HO presigns for (its public S3 endpoint, else its S3 endpoint)."""
    endpoint = (ho.env.get("PHOTO_SYNC_HO_S3_PUBLIC_ENDPOINT")
                or ho.env["PHOTO_SYNC_HO_S3_ENDPOINT"])
    return f"http://{endpoint}"


def test_presigned_downloads_bypass_the_api(ho_stack, photo_factory, make_edge):
    ho = ho_stack("presign", extra_env={"PHOTO_SYNC_HO_PRESIGNED_DOWNLOADS": "true"})
    ho.import_dir(photo_factory(15, seed=21, min_kb=20, max_kb=60, mean_kb=30))
    edge = make_edge(ho, presigned_origin=_s3_origin(ho))
    page = requests.get(f"{ho.api}/sync/product-photos/", timeout=10, headers={
        "Authorization": f"Bearer {ho.token(edge.store_id)}"}).json()
    url = page["photos"][0]["download_url"]
    assert requests.get(url, timeout=10).content, "the URL works without credentials"
    before = _api_downloads(ho)
    result, summary = edge.pull("full")
    assert result.returncode == 0, result.stderr
    assert summary["downloaded"] == 15
    assert _api_downloads(ho) == before, "no photo went through the API's download endpoint"
    assert_edge_matches_ho(edge, ho)


def test_unreachable_s3_falls_back_to_the_api(ho_stack, photo_factory, make_edge):
    dead = f"127.0.0.1:{testbed.free_port()}"
    ho = ho_stack("presign-dead", extra_env={"PHOTO_SYNC_HO_PRESIGNED_DOWNLOADS": "true",
                                             "PHOTO_SYNC_HO_S3_PUBLIC_ENDPOINT": dead})
    ho.import_dir(photo_factory(12, seed=22, min_kb=20, max_kb=60, mean_kb=30))
    edge = make_edge(ho, concurrency=2, presigned_origin=_s3_origin(ho))
    result, summary = edge.pull("full")
    assert result.returncode == 0, result.stderr
    assert summary["downloaded"] == 12 and summary["failed"] == 0
    assert _api_downloads(ho) >= 12 - 3, "after a few failed presigned GETs the API serves"
    assert_edge_matches_ho(edge, ho)
    assert_no_bad_bytes(edge)


def test_presigned_urls_are_ignored_without_their_origin(ho_stack, photo_factory, make_edge):
    """HO offers presigned URLs, but the store was not told which S3 origin to trust
    (PHOTO_SYNC_EDGE_PRESIGNED_ORIGIN unset): every photo comes through the API."""
    ho = ho_stack("presign-off", extra_env={"PHOTO_SYNC_HO_PRESIGNED_DOWNLOADS": "true"})
    ho.import_dir(photo_factory(6, seed=23, min_kb=20, max_kb=40, mean_kb=30))
    edge = make_edge(ho)
    before = _api_downloads(ho)
    result, summary = edge.pull("full")
    assert result.returncode == 0, result.stderr
    assert summary["downloaded"] == 6
    assert _api_downloads(ho) - before == 6, "each photo through the API's download endpoint"
    assert_edge_matches_ho(edge, ho)
