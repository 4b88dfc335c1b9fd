"""Every file name the importer accepts syncs to a store, directly and through the gateway.

Odd but legal names (spaces, `+`, `%`, `#`, `?`, UTF-8, a leading dash, 200 characters,
names differing only by case or by Unicode normalisation, dot files) go through
`photo-sync-ho import`, the API (streamed, and handed to nginx by X-Accel-Redirect) and an
edge pull; each is either synced with the right bytes or refused at import with a reason.
"""

from __future__ import annotations

import json
import secrets
import unicodedata
import uuid

import pytest

from conftest import assert_edge_matches_ho
from support import gateway as gw_support
from support import testbed

NAMES = [
    "with space.jpg", "plus+sign.jpg", "100%.jpg", "encoded%20name.jpg", "hash#tag.jpg",
    "what?.jpg", "ampersand&equals=.jpg", "ünïcödé-日本語.jpg", "-leading-dash.jpg",
    "l" * 200 + ".jpg", "Case.jpg", "case.jpg", unicodedata.normalize("NFC", "café.jpg"),
    unicodedata.normalize("NFD", "café.jpg"), ".hidden.jpg", "semi;colon.jpg",
    "quote'\"s.jpg", "back\\slash.jpg", "tilde~.jpg", "brackets[1](2){3}.jpg",
    "UPPER.JPG", "trailing space .jpg", "..jpg", "emoji-\U0001f4f7.jpg",
    "zero\u200bwidth.jpg", "rtl-\u202e.jpg",
]
# Refused at import, each with its reason: a newline in a name once passed the import and
# the direct API, and then, behind the gateway, was a 404 the store took for "deleted at HO"
# (never synced, never failed, never reported); bytes that are not UTF-8 stopped the whole
# import with a traceback.
REFUSED = {"new\nline.jpg": "control character", "tab\there.jpg": "control character",
           "caf\udce9-latin1.jpg": "not valid UTF-8"}


@pytest.fixture(scope="module")
def names_ho(ho_stack, tmp_path_factory):
    ho = ho_stack("names")
    folder = tmp_path_factory.mktemp("odd-names")
    product = folder / str(uuid.uuid4())
    for index, name in enumerate(NAMES + list(REFUSED)):
        testbed.make_jpeg(product / name, 4096 + index * 97, 500 + index)
    result = ho.cli("import", "--json", str(folder))
    return ho, folder, json.loads(result.stdout)


def test_every_odd_name_is_imported_or_refused_with_a_reason(names_ho):
    ho, folder, summary = names_ho
    skipped = {entry["path"].rsplit("/", 1)[1]: entry["reason"] for entry in summary["skipped"]}
    assert set(skipped) == set(REFUSED), skipped
    for name, words in REFUSED.items():
        assert words in skipped[name] and "rename" in skipped[name], skipped[name]
    with ho.catalog() as conn:
        imported = {r["filename"] for r in conn.execute(
            "SELECT filename FROM product_photo WHERE deleted_at IS NULL").fetchall()}
    assert imported == set(NAMES)


def _assert_all_synced(edge, ho) -> None:
    """Every live HO photo is at the store, synced; the message names the missing files."""
    with ho.catalog() as conn:
        names = {str(r["id"]): r["filename"] for r in conn.execute(
            "SELECT id, filename FROM product_photo WHERE deleted_at IS NULL").fetchall()}
    held = edge.photos()
    missing = [names[i] for i in names if i not in held or held[i][2] != "synced"]
    assert not missing, missing
    assert_edge_matches_ho(edge, ho)


def test_every_imported_name_syncs_directly(names_ho, make_edge):
    ho, _, _ = names_ho
    edge = make_edge(ho)
    result, summary = edge.pull("full")
    assert result.returncode == 0, result.stderr
    _assert_all_synced(edge, ho)
    assert summary["failed"] == 0, summary


@pytest.mark.skipif(gw_support.nginx_missing() is not None, reason=gw_support.nginx_missing() or "")
@pytest.mark.parametrize("path", ["accel", "signed"])
def test_every_imported_name_syncs_through_the_gateway(names_ho, make_edge, bed_root, s3, path):
    """Through the API's X-Accel-Redirect, and through signed links (nginx checks their mac
    over the key as it decodes the path, so every name must sign the way nginx reads it)."""
    ho, _, _ = names_ho
    secret = secrets.token_hex(32) if path == "signed" else ""
    api = testbed.HOServer(bed_root / f"names-{path}", {
        **ho.env, "PHOTO_SYNC_HO_ACCEL_REDIRECT": "true",
        "PHOTO_SYNC_HO_TRUSTED_PROXIES": "1", "PHOTO_SYNC_HO_SIGNED_LINK_SECRET": secret}).start()
    gateway = gw_support.Gateway(bed_root / f"names-gateway-{path}", [f"127.0.0.1:{api.port}"],
                                 s3.endpoint, ho.env["PHOTO_SYNC_HO_S3_BUCKET"],
                                 ho_gateway_signed_link_secret=secret)
    try:
        gateway.start()
        edge = make_edge(ho, ho_url=gateway.url, ca_bundle=str(gateway.tls.ca_path))
        result, summary = edge.pull("full")
        assert result.returncode == 0, result.stderr
        _assert_all_synced(edge, ho)
        assert summary["failed"] == 0, summary
        downloads = api.log_path.read_text().count("/download/")
        assert (downloads == 0) if path == "signed" else (downloads > 0)
    finally:
        gateway.stop()
        api.stop()
