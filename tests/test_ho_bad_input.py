"""Bad input gets a 4xx with a JSON `{error, detail}`, never a 5xx or an HTML page.

One table: every way a store (or anything else on the network) can get a
request wrong, and the status it must get back.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt
import pytest
import requests

from photo_sync.protocol import REPORT_BATCH_MAX

ISSUER, AUDIENCE = "photo-sync-ho", "photo-sync-edge"


@dataclass
class Ctx:
    """What the cases need from the running HO: its URL, stores, photos and tokens."""

    root: str
    api: str
    store_a: str
    store_b: str
    disabled_store: str
    disabled_secret: str
    photo: str
    deleted_photo: str
    cursor: str
    jwt_secret: str
    tokens: dict
    log_path: object = None

    def claims(self, **changes) -> dict:
        now = int(time.time())
        claims = {"sub": self.store_a, "iat": now, "exp": now + 600, "iss": ISSUER,
                  "aud": AUDIENCE, "gen": 1}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def forge(self, key: str | None = None, algorithm: str = "HS256", **changes) -> str:
        return jwt.encode(self.claims(**changes), key or self.jwt_secret, algorithm=algorithm)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unsigned(ctx: Ctx) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(ctx.claims()).encode())}."


@pytest.fixture(scope="module")
def ctx(ho_stack, photo_factory):
    ho = ho_stack("bad")
    ho.import_dir(photo_factory(2, seed=31, min_kb=8, max_kb=16, mean_kb=10))
    store_a, _ = ho.add_store("a")
    store_b, _ = ho.add_store("b")
    disabled, disabled_secret = ho.add_store("disabled")
    disabled_token = ho.token(disabled)
    ho.cli("store", "disable", disabled)
    client = ho.session(store_a)
    page = client.get(f"{ho.api}/sync/product-photos/").json()
    photo, doomed = (p["id"] for p in page["photos"])
    ho.cli("delete", doomed)
    return Ctx(root=ho.url, api=ho.api, store_a=store_a, store_b=store_b, disabled_store=disabled,
               disabled_secret=disabled_secret, photo=photo, deleted_photo=doomed,
               cursor=page["next_cursor"], jwt_secret=ho.env["PHOTO_SYNC_HO_JWT_SECRET"],
               tokens={"a": ho.token(store_a), "disabled": disabled_token},
               log_path=ho.server.log_path)


LIST = "/sync/product-photos/"
STATUS = "/sync/product-photos/status/"
TOKEN = "/auth/token/"


def download(photo: str) -> str:
    return f"/sync/product-photos/{photo}/download/"


def report(ctx: Ctx, **item) -> dict:
    """A status report of one item about store A's photo; `field=...` leaves a field out."""
    base = {"photo_id": ctx.photo, "status": "synced", "version": 1, "synced_at": None,
            "error": None}
    base.update(item)
    return {"store_id": ctx.store_a, "sync_batch": [{k: v for k, v in base.items()
                                                      if v is not ...}]}


def cursor_of(raw: str) -> str:
    return _b64(raw.encode())


# (id, method, path or path(ctx), request kwargs(ctx), expected status, expected error code).
# Paths are below /api/v1 unless a full URL. `auth` in the kwargs replaces the default bearer
# token of store A; None sends no Authorization header.
CASES = [
    # Malformed ids.
    ("list-store_id-not-uuid", "GET", LIST, lambda c: {"params": {"store_id": "not-a-uuid"}},
     400, "invalid_store_id"),
    ("list-store_id-digits", "GET", LIST, lambda c: {"params": {"store_id": "1234"}},
     400, "invalid_store_id"),
    ("download-store_id-not-uuid", "GET", lambda c: download(c.photo),
     lambda c: {"params": {"store_id": "x" * 36}}, 400, "invalid_store_id"),
    ("download-photo_id-not-uuid", "GET", download("not-a-uuid"), None, 400, "invalid_photo_id"),
    ("download-photo_id-short-hex", "GET", download("1234abcd"), None, 400, "invalid_photo_id"),
    ("download-photo_id-nul", "GET", download("%00"), None, 400, "invalid_photo_id"),
    ("download-photo_id-too-long", "GET", download("a" * 300), None, 400, "invalid_photo_id"),
    # Paging parameters.
    ("limit-0", "GET", LIST, lambda c: {"params": {"limit": 0}}, 400, "invalid_limit"),
    ("limit-501", "GET", LIST, lambda c: {"params": {"limit": 501}}, 400, "invalid_limit"),
    ("limit-negative", "GET", LIST, lambda c: {"params": {"limit": -1}}, 400, "invalid_limit"),
    ("limit-abc", "GET", LIST, lambda c: {"params": {"limit": "abc"}}, 400, "invalid_limit"),
    ("limit-huge", "GET", LIST, lambda c: {"params": {"limit": 10**30}}, 400, "invalid_limit"),
    ("limit-fraction", "GET", LIST, lambda c: {"params": {"limit": "1.5"}}, 400, "invalid_limit"),
    ("limit-superscript-digit", "GET", LIST, lambda c: {"params": {"limit": "\u00b2"}},
     400, "invalid_limit"),
    ("offset-negative", "GET", LIST, lambda c: {"params": {"offset": -1}}, 400, "invalid_offset"),
    ("offset-x", "GET", LIST, lambda c: {"params": {"offset": "x"}}, 400, "invalid_offset"),
    ("offset-huge", "GET", LIST, lambda c: {"params": {"offset": 10**12}}, 400,
     "invalid_offset"),
    ("since-word", "GET", LIST, lambda c: {"params": {"since": "yesterday"}}, 400,
     "invalid_since"),
    ("since-no-such-day", "GET", LIST, lambda c: {"params": {"since": "2026-02-30T00:00:00Z"}},
     400, "invalid_since"),
    ("since-offset-over-24h", "GET", LIST,
     lambda c: {"params": {"since": "2026-02-03T10:00:00+25:00"}}, 400, "invalid_since"),
    ("since-before-1970", "GET", LIST, lambda c: {"params": {"since": "1900-01-01T00:00:00Z"}},
     400, "invalid_since"),
    ("since-year-1-with-offset", "GET", LIST,
     lambda c: {"params": {"since": "0001-01-01T00:00:00+05:00"}}, 400, "invalid_since"),
    ("since-year-9999-with-offset", "GET", LIST,
     lambda c: {"params": {"since": "9999-12-31T23:00:00-05:00"}}, 400, "invalid_since"),
    ("cursor-garbage", "GET", LIST, lambda c: {"params": {"cursor": "!!not a cursor!!"}},
     400, "invalid_cursor"),
    ("cursor-truncated", "GET", LIST, lambda c: {"params": {"cursor": c.cursor[:5]}},
     400, "invalid_cursor"),
    ("cursor-empty", "GET", LIST, lambda c: {"params": {"cursor": ""}}, 400, "invalid_cursor"),
    ("cursor-too-long", "GET", LIST, lambda c: {"params": {"cursor": c.cursor * 20}},
     400, "invalid_cursor"),
    ("cursor-negative-seq", "GET", LIST, lambda c: {"params": {"cursor": cursor_of("c1:-1")}},
     400, "invalid_cursor"),
    ("cursor-other-version", "GET", LIST, lambda c: {"params": {"cursor": cursor_of("c2:5")}},
     400, "invalid_cursor"),
    ("cursor-seq-over-bigint", "GET", LIST,
     lambda c: {"params": {"cursor": cursor_of("c1:" + "9" * 20)}}, 400, "invalid_cursor"),
    ("cursor-with-offset", "GET", LIST, lambda c: {"params": {"cursor": c.cursor, "offset": 5}},
     400, "conflicting_parameters"),
    ("cursor-with-since", "GET", LIST,
     lambda c: {"params": {"cursor": c.cursor, "since": "2026-01-01T00:00:00Z"}},
     400, "conflicting_parameters"),
    # Token request bodies.
    ("token-non-json", "POST", TOKEN,
     lambda c: {"data": "store_id=x&secret=y", "auth": None,
                "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
     400, "invalid_body"),
    ("token-broken-json", "POST", TOKEN,
     lambda c: {"data": '{"store_id": ', "auth": None,
                "headers": {"Content-Type": "application/json"}}, 400, "invalid_body"),
    ("token-json-array", "POST", TOKEN,
     lambda c: {"json": [c.store_a, "secret"], "auth": None}, 400, "invalid_body"),
    ("token-empty-object", "POST", TOKEN, lambda c: {"json": {}, "auth": None},
     400, "invalid_body"),
    ("token-store_id-number", "POST", TOKEN,
     lambda c: {"json": {"store_id": 42, "secret": "s"}, "auth": None}, 400, "invalid_body"),
    ("token-secret-list", "POST", TOKEN,
     lambda c: {"json": {"store_id": c.store_a, "secret": ["s"]}, "auth": None},
     400, "invalid_body"),
    ("token-secret-empty", "POST", TOKEN,
     lambda c: {"json": {"store_id": c.store_a, "secret": ""}, "auth": None},
     400, "invalid_body"),
    ("token-secret-too-long", "POST", TOKEN,
     lambda c: {"json": {"store_id": c.store_a, "secret": "s" * 5000}, "auth": None},
     400, "invalid_body"),
    ("token-store_id-not-uuid", "POST", TOKEN,
     lambda c: {"json": {"store_id": "store-1", "secret": "s"}, "auth": None},
     400, "invalid_store_id"),
    ("token-unknown-store", "POST", TOKEN,
     lambda c: {"json": {"store_id": str(uuid.uuid4()), "secret": "s" * 40}, "auth": None},
     401, "invalid_credentials"),
    ("token-wrong-secret", "POST", TOKEN,
     lambda c: {"json": {"store_id": c.store_a, "secret": "s" * 40}, "auth": None},
     401, "invalid_credentials"),
    ("token-disabled-store", "POST", TOKEN,
     lambda c: {"json": {"store_id": c.disabled_store, "secret": c.disabled_secret},
                "auth": None}, 401, "invalid_credentials"),
    ("token-body-over-1mb", "POST", TOKEN,
     lambda c: {"json": {"store_id": c.store_a, "secret": "s" * (1024 * 1024 + 10)},
                "auth": None}, 413, None),
    # Status report bodies.
    ("status-non-json", "POST", STATUS,
     lambda c: {"data": "synced", "headers": {"Content-Type": "text/plain"}},
     400, "invalid_body"),
    ("status-json-array", "POST", STATUS, lambda c: {"json": report(c)["sync_batch"]},
     400, "invalid_body"),
    ("status-batch-not-list", "POST", STATUS,
     lambda c: {"json": {"sync_batch": report(c)["sync_batch"][0]}}, 400, "invalid_body"),
    ("status-batch-missing", "POST", STATUS, lambda c: {"json": {"store_id": c.store_a}},
     400, "invalid_body"),
    ("status-item-not-object", "POST", STATUS,
     lambda c: {"json": {"sync_batch": ["synced"]}}, 400, "invalid_body"),
    ("status-photo_id-missing", "POST", STATUS, lambda c: {"json": report(c, photo_id=...)},
     400, "invalid_body"),
    ("status-photo_id-not-uuid", "POST", STATUS,
     lambda c: {"json": report(c, photo_id="photo-1")}, 400, "invalid_body"),
    ("status-photo_id-number", "POST", STATUS, lambda c: {"json": report(c, photo_id=7)},
     400, "invalid_body"),
    ("status-unknown-status", "POST", STATUS, lambda c: {"json": report(c, status="done")},
     400, "invalid_body"),
    ("status-status-missing", "POST", STATUS, lambda c: {"json": report(c, status=...)},
     400, "invalid_body"),
    ("status-version-negative", "POST", STATUS, lambda c: {"json": report(c, version=-1)},
     400, "invalid_body"),
    ("status-version-string", "POST", STATUS, lambda c: {"json": report(c, version="1")},
     400, "invalid_body"),
    ("status-version-bool", "POST", STATUS, lambda c: {"json": report(c, version=True)},
     400, "invalid_body"),
    ("status-version-float", "POST", STATUS, lambda c: {"json": report(c, version=1.5)},
     400, "invalid_body"),
    ("status-version-over-int32", "POST", STATUS, lambda c: {"json": report(c, version=2**31)},
     400, "invalid_body"),
    ("status-synced_at-word", "POST", STATUS,
     lambda c: {"json": report(c, synced_at="yesterday")}, 400, "invalid_synced_at"),
    ("status-synced_at-number", "POST", STATUS,
     lambda c: {"json": report(c, synced_at=1700000000)}, 400, "invalid_body"),
    ("status-synced_at-year-1-with-offset", "POST", STATUS,
     lambda c: {"json": report(c, synced_at="0001-01-01T00:00:00+05:00")},
     400, "invalid_synced_at"),
    ("status-error-number", "POST", STATUS, lambda c: {"json": report(c, error=500)},
     400, "invalid_body"),
    ("status-store_id-number", "POST", STATUS,
     lambda c: {"json": {**report(c), "store_id": 1}}, 400, "invalid_store_id"),
    ("status-store_id-not-uuid", "POST", STATUS,
     lambda c: {"json": {**report(c), "store_id": "store-a"}}, 400, "invalid_store_id"),
    ("status-batch-of-1001", "POST", STATUS,
     lambda c: {"json": {"sync_batch": report(c)["sync_batch"] * (REPORT_BATCH_MAX + 1)}},
     413, "batch_too_large"),
    ("status-body-over-1mb", "POST", STATUS,
     lambda c: {"json": report(c, error="e" * (1024 * 1024 + 10))}, 413, None),
    # Every kind of bad token, on the photo list.
    ("auth-none", "GET", LIST, lambda c: {"auth": None}, 401, "unauthorized"),
    ("auth-basic-scheme", "GET", LIST,
     lambda c: {"auth": None, "headers": {"Authorization": "Basic dXNlcjpwYXNz"}},
     401, "unauthorized"),
    ("auth-bearer-without-token", "GET", LIST,
     lambda c: {"auth": None, "headers": {"Authorization": "Bearer "}}, 401, "unauthorized"),
    ("auth-token-without-scheme", "GET", LIST,
     lambda c: {"auth": None, "headers": {"Authorization": c.tokens["a"]}}, 401, "unauthorized"),
    ("auth-garbage", "GET", LIST, lambda c: {"auth": "not.a.jwt"}, 401, "unauthorized"),
    ("auth-random-bytes", "GET", LIST, lambda c: {"auth": secrets.token_urlsafe(40)},
     401, "unauthorized"),
    ("auth-expired", "GET", LIST,
     lambda c: {"auth": c.forge(iat=int(time.time()) - 7200, exp=int(time.time()) - 60)},
     401, "unauthorized"),
    ("auth-forged-signature", "GET", LIST, lambda c: {"auth": c.forge(key="k" * 64)},
     401, "unauthorized"),
    ("auth-signature-stripped", "GET", LIST,
     lambda c: {"auth": c.tokens["a"].rsplit(".", 1)[0] + "."}, 401, "unauthorized"),
    ("auth-alg-none", "GET", LIST, lambda c: {"auth": _unsigned(c)}, 401, "unauthorized"),
    ("auth-alg-hs512", "GET", LIST, lambda c: {"auth": c.forge(algorithm="HS512")},
     401, "unauthorized"),
    ("auth-wrong-audience", "GET", LIST, lambda c: {"auth": c.forge(aud="someone-else")},
     401, "unauthorized"),
    ("auth-wrong-issuer", "GET", LIST, lambda c: {"auth": c.forge(iss="evil-ho")},
     401, "unauthorized"),
    ("auth-no-expiry", "GET", LIST, lambda c: {"auth": c.forge(exp=None)}, 401, "unauthorized"),
    ("auth-subject-not-uuid", "GET", LIST, lambda c: {"auth": c.forge(sub="store-a")},
     401, "unauthorized"),
    ("auth-unknown-store", "GET", LIST, lambda c: {"auth": c.forge(sub=str(uuid.uuid4()))},
     401, "unauthorized"),
    ("auth-revoked-generation", "GET", LIST, lambda c: {"auth": c.forge(gen=0)},
     401, "unauthorized"),
    ("auth-disabled-store", "GET", LIST, lambda c: {"auth": c.tokens["disabled"]},
     401, "unauthorized"),
    ("auth-disabled-store-download", "GET", lambda c: download(c.photo),
     lambda c: {"auth": c.tokens["disabled"]}, 401, "unauthorized"),
    ("auth-disabled-store-status", "POST", STATUS,
     lambda c: {"auth": c.tokens["disabled"], "json": {"sync_batch": []}}, 401, "unauthorized"),
    ("auth-none-download", "GET", lambda c: download(c.photo), lambda c: {"auth": None},
     401, "unauthorized"),
    ("auth-none-status", "POST", STATUS, lambda c: {"auth": None, "json": report(c)},
     401, "unauthorized"),
    # A store acting as another store.
    ("cross-store-list", "GET", LIST, lambda c: {"params": {"store_id": c.store_b}},
     403, "forbidden"),
    ("cross-store-download", "GET", lambda c: download(c.photo),
     lambda c: {"params": {"store_id": c.store_b}}, 403, "forbidden"),
    ("cross-store-status", "POST", STATUS,
     lambda c: {"json": {**report(c), "store_id": c.store_b}}, 403, "forbidden"),
    # Wrong method, unknown path, gone photo.
    ("method-delete-list", "DELETE", LIST, None, 405, "method_not_allowed"),
    ("method-get-token", "GET", TOKEN, lambda c: {"auth": None}, 405, "method_not_allowed"),
    ("method-put-status", "PUT", STATUS, lambda c: {"json": report(c)}, 405,
     "method_not_allowed"),
    ("method-post-download", "POST", lambda c: download(c.photo), None, 405,
     "method_not_allowed"),
    ("method-post-health", "POST", "/health/", lambda c: {"auth": None}, 405,
     "method_not_allowed"),
    ("path-unknown", "GET", "/photos/", None, 404, "not_found"),
    ("path-photo-without-download", "GET", lambda c: f"/sync/product-photos/{c.photo}/", None,
     404, "not_found"),
    ("path-api-v2", "GET", lambda c: f"{c.root}/api/v2/sync/product-photos/", None,
     404, "not_found"),
    ("download-unknown-photo", "GET", lambda c: download(str(uuid.uuid4())), None,
     404, "not_found"),
    ("download-deleted-photo", "GET", lambda c: download(c.deleted_photo), None,
     404, "not_found"),
]



# Bodies no endpoint may answer with a 5xx, whatever their shape: each is sent to every POST
# endpoint. (id, raw body or body(ctx), extra headers, status, error code). 100 000 levels of
# nesting is far below the 1 MB body cap; Python's JSON parser gives up (RecursionError) long
# before, which once surfaced as a 500 with a traceback in the log.
DEEP = 100_000
JSON = {"Content-Type": "application/json"}


def _chunks(total: int, size: int = 64 * 1024):
    """A body sent chunked (no Content-Length), so only the server's running count can cap it."""
    sent = 0
    while sent < total:
        yield b"[" * min(size, total - sent)
        sent += size


BODY_CASES = [
    ("nested-arrays", "[" * DEEP + "]" * DEEP, JSON, 400, "invalid_body"),
    ("nested-objects", '{"a":' * DEEP + "1" + "}" * DEEP, JSON, 400, "invalid_body"),
    ("nested-unclosed", "[" * DEEP, JSON, 400, "invalid_body"),
    ("nested-in-store_id", '{"store_id": ' + "[" * DEEP + "]" * DEEP + ', "secret": "s"}',
     JSON, 400, "invalid_body"),
    ("nested-in-batch-item", lambda c: '{"sync_batch": [{"photo_id": "%s", "status": "synced", '
     '"error": %s}]}' % (c.photo, "[" * DEEP + "]" * DEEP), JSON, 400, "invalid_body"),
    ("nested-500-levels", '{"store_id": ' + "[" * 500 + "]" * 500 + ', "sync_batch": '
     + "[" * 500 + "]" * 500 + "}", JSON, 400, None),
    ("nested-as-form", "[" * DEEP, {"Content-Type": "application/x-www-form-urlencoded"},
     400, "invalid_body"),
    ("nested-without-content-type", "[" * DEEP, {}, 400, "invalid_body"),
    ("integer-of-5000-digits", '{"store_id": 1' + "0" * 5000 + ', "sync_batch": 1' + "0" * 5000
     + "}", JSON, 400, None),
    ("float-overflow", '{"store_id": 1e400, "sync_batch": 1e400}', JSON, 400, None),
    ("nan", '{"store_id": NaN, "secret": NaN, "sync_batch": NaN}', JSON, 400, "invalid_body"),
    ("infinity", '{"store_id": -Infinity, "sync_batch": Infinity}', JSON, 400, "invalid_body"),
    ("invalid-utf8", b'{"store_id": "\xff\xfe\xfd", "secret": "\xc3"}', JSON, 400,
     "invalid_body"),
    ("utf16", '{"store_id": "x", "secret": "y"}'.encode("utf-16"), JSON, 400, "invalid_body"),
    ("utf8-bom", b"\xef\xbb\xbf{}", JSON, 400, "invalid_body"),
    ("empty", b"", JSON, 400, "invalid_body"),
    ("whitespace", b"  \n\t ", JSON, 400, "invalid_body"),
    ("null", "null", JSON, 400, "invalid_body"),
    ("string", '"store"', JSON, 400, "invalid_body"),
    ("number", "42", JSON, 400, "invalid_body"),
    ("true", "true", JSON, 400, "invalid_body"),
    ("trailing-garbage", '{"store_id": "x"} {"secret": "y"}', JSON, 400, "invalid_body"),
    ("lone-surrogate-store_id", '{"store_id": "\\ud800", "secret": "s", "sync_batch": []}',
     JSON, 400, "invalid_store_id"),
    ("nul-in-store_id", '{"store_id": "\\u0000", "secret": "s", "sync_batch": []}', JSON, 400,
     "invalid_store_id"),
    ("gzip-encoded", b"\x1f\x8b\x08\x00" + bytes(range(64)),
     {**JSON, "Content-Encoding": "gzip"}, 400, "invalid_body"),
    ("chunked-over-1mb", lambda c: _chunks(2 * 1024 * 1024), JSON, 413, None),
]


def _body_case(endpoint: str, case) -> tuple:
    name, body, headers, status, code = case

    def make_kwargs(c):
        data = body(c) if callable(body) else body
        kwargs = {"data": data.encode() if isinstance(data, str) else data,
                  "headers": dict(headers)}
        if endpoint == TOKEN:
            kwargs["auth"] = None  # the endpoint anyone on the network can reach
        return kwargs
    return (f"{'token' if endpoint == TOKEN else 'status'}-body-{name}", "POST", endpoint,
            make_kwargs, status, code)


CASES += [_body_case(endpoint, case) for endpoint in (TOKEN, STATUS) for case in BODY_CASES]


@pytest.mark.parametrize("method, path, make_kwargs, status, code",
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_bad_request_gets_a_json_4xx(ctx, method, path, make_kwargs, status, code):
    kwargs = make_kwargs(ctx) if make_kwargs else {}
    token = kwargs.pop("auth", ctx.tokens["a"])
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers.setdefault("Authorization", f"Bearer {token}")
    path = path(ctx) if callable(path) else path
    url = path if path.startswith("http") else ctx.api + path
    response = requests.request(method, url, headers=headers, timeout=30, allow_redirects=False,
                                **kwargs)
    assert response.status_code == status, response.text[:500]
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:200]
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error", "detail"}, body
    assert body["detail"] and isinstance(body["detail"], str)
    if code:
        assert body["error"] == code
    if status == 401 and code == "unauthorized":
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if status == 405:
        assert method not in response.headers["Allow"]


@pytest.mark.parametrize("token", ["issued", "forged-with-right-key-and-claims"])
def test_a_good_request_with_a_good_token_passes(ctx, token):
    # The table's 4xx come from the one thing each case breaks, not from a broken token,
    # store or token forger.
    access = ctx.tokens["a"] if token == "issued" else ctx.forge()
    response = requests.get(f"{ctx.api}{LIST}", params={"store_id": ctx.store_a},
                            headers={"Authorization": f"Bearer {access}"}, timeout=10)
    assert response.status_code == 200
    assert [p["id"] for p in response.json()["photos"]] == [ctx.photo]
    assert requests.get(f"{ctx.api}{download(ctx.photo)}", timeout=10,
                        headers={"Authorization": f"Bearer {access}"}).status_code == 200


def test_no_bad_request_left_a_traceback_in_the_log(ctx):
    # Runs after the table: every case above was refused on purpose, none as an accident.
    log = ctx.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]
