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


def _unauthorized(detail: str) -> APIError:
    return APIError(401, "unauthorized", detail, {"WWW-Authenticate": 'Bearer realm="photo-sync"'})


def authenticate_request() -> uuid.UUID:
    """The store id of the bearer token on this request; raises 401 for anything else."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("missing bearer token: POST /api/v1/auth/token/ first")
    try:
        claims = jwt.decode(
            token.strip(), current_app.config["JWT_SECRET"], algorithms=[ALGORITHM],
            audience=AUDIENCE, issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]})
    except jwt.ExpiredSignatureError:
        raise _unauthorized("token expired: request a new one") from None
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise _unauthorized("invalid token") from None
    try:
        store_id = uuid.UUID(str(claims["sub"]))
    except ValueError:
        raise _unauthorized("invalid token subject") from None
    with current_app.extensions["photo_sync"].pool.connection() as conn:
        store = catalog.get_store(conn, store_id)
    if store is None or not store["active"]:
        raise _unauthorized("store is unknown or disabled")
    if claims.get("gen") != store["token_generation"]:
        raise _unauthorized("token was revoked (secret rotated or store disabled): "
                            "request a new one")
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
