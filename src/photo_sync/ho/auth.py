"""Store authentication: credentials for a JWT, and the check on every sync request."""

from __future__ import annotations

import functools
import time
import uuid

import jwt
from flask import current_app, g, request

from photo_sync.ho import catalog
from photo_sync.ho.errors import APIError

ALGORITHM = "HS256"
ISSUER = "photo-sync-ho"
AUDIENCE = "photo-sync-edge"


def issue_token(store: dict, secret_key: str, ttl: int) -> str:
    """A signed JWT for `store`, valid `ttl` seconds and until its token generation moves."""
    now = int(time.time())
    claims = {"sub": str(store["id"]), "iat": now, "exp": now + ttl, "iss": ISSUER,
              "aud": AUDIENCE, "gen": store["token_generation"]}
    return jwt.encode(claims, secret_key, algorithm=ALGORITHM)


def _unauthorized(detail: str, reason: str) -> APIError:
    # The refusal's reason for photo_sync_ho_token_failures_total (photo_sync.ho.metrics).
    g.token_failure = reason
    return APIError(401, "unauthorized", detail, {"WWW-Authenticate": 'Bearer realm="photo-sync"'})


# Tokens whose signature and claims this process has verified: (key, token) -> (store id,
# token generation, exp). A store sends the same token on every request of a sync, so the
# HMAC and claim checks run once per token rather than once per download. Only the
# signature work is saved: exp is checked on every hit, and the store row (active, token
# generation) is still read on every request, so revocation stays immediate. Bounded: the
# whole map is dropped when full (a store's next request verifies its token again).
_VERIFIED: dict = {}
VERIFIED_MAX = 4096


def decode_token() -> tuple[uuid.UUID, object]:
    """(store id, token generation) of this request's bearer token; 401 unless it is valid.

    Checks signature and claims only; `check_store` decides whether the store still
    accepts the token."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("missing bearer token: POST /api/v1/auth/token/ first", "missing")
    key = (current_app.config["JWT_SECRET"], token)
    # Another API host may have issued the token with a clock a little ahead (iat in our
    # future) or behind (exp just passed): within the leeway both are fine.
    leeway = current_app.config.get("TOKEN_LEEWAY", 0)
    hit = _VERIFIED.get(key)
    if hit is not None and hit[2] + leeway > time.time():
        return hit[0], hit[1]
    try:
        claims = jwt.decode(
            token, key[0], algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
            leeway=leeway, options={"require": ["exp", "iat", "sub", "iss", "aud"]})
    except jwt.ExpiredSignatureError:
        _VERIFIED.pop(key, None)
        raise _unauthorized("token expired: request a new one", "expired") from None
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise _unauthorized("invalid token", "invalid") from None
    try:
        store_id = uuid.UUID(str(claims["sub"]))
    except ValueError:
        raise _unauthorized("invalid token subject", "invalid") from None
    exp = claims["exp"]
    if isinstance(exp, (int, float)) and not isinstance(exp, bool):
        if len(_VERIFIED) >= VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED[key] = (store_id, claims.get("gen"), exp)
    return store_id, claims.get("gen")


def check_store(store: dict | None, generation) -> None:
    """401 unless `store` (its catalog row, or None) is active and still issues `generation`."""
    if store is None or not store["active"]:
        raise _unauthorized("store is unknown or disabled", "unknown_store")
    if generation != store["token_generation"]:
        raise _unauthorized("token was revoked (secret rotated or store disabled): "
                            "request a new one", "revoked")


def authenticate_request() -> uuid.UUID:
    """The store id of the bearer token on this request; raises 401 for anything else."""
    store_id, generation = decode_token()
    with current_app.extensions["photo_sync"].pool.connection() as conn:
        store = catalog.get_store(conn, store_id)
    check_store(store, generation)
    return store_id


def store_required(view):
    """Authenticate the store; `g.store_id` is who it is."""
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        g.store_id = authenticate_request()
        return view(*args, **kwargs)
    return wrapper


def check_store_param(value) -> uuid.UUID:
    """A request's `store_id` must be the authenticated store's; absent means that store."""
    if value is None or value == "":
        return g.store_id
    if not isinstance(value, str):
        raise APIError(400, "invalid_store_id", "store_id must be a UUID string")
    try:
        store_id = uuid.UUID(value)
    except ValueError:
        raise APIError(400, "invalid_store_id", "store_id must be a UUID") from None
    if store_id != g.store_id:
        raise APIError(403, "forbidden", "this token belongs to another store")
    return store_id
