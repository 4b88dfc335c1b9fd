"""Make the catalog's stores what an inventory says: the one implementation behind
`photo-sync-ho store set-many` and the `photo_sync_store` Ansible module.

An entry is a store id, a name, a secret and a state:
- ``registered`` (the default): the store exists with this name and secret; a store an
  operator disabled stays disabled (enabling is an explicit act);
- ``enabled`` / ``disabled``: the same, then the store is enabled or disabled (disabling
  revokes its tokens at once).

The whole list is checked before anything is written, and written in one transaction, so
a list that fails half-way changes nothing. Errors name the entry and the store, never a
secret; nothing returned here holds one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import psycopg

from photo_sync.errors import ConfigError
from photo_sync.ho import catalog

MIN_SECRET_CHARS = 16
STATES = ("registered", "enabled", "disabled")


@dataclass(frozen=True)
class Entry:
    store_id: uuid.UUID
    name: str
    secret: str = field(repr=False)
    state: str = "registered"


def secret_ok(secret: str) -> bool:
    """Whether a store secret is long enough to register."""
    return len(secret) >= MIN_SECRET_CHARS


def parse_entries(entries, where: str = "stores") -> list[Entry]:
    """The entries of a store list (decoded JSON or module options), checked whole."""
    if not isinstance(entries, list):
        raise ConfigError(f'{where} must be a list of {{"store_id", "name", "secret"}}')
    stores, seen = [], set()
    for index, entry in enumerate(entries):
        at = f"{where}: entry {index}"
        if not isinstance(entry, dict):
            raise ConfigError(f'{at} is not an object with "store_id" and "secret"')
        try:
            store_id = uuid.UUID(str(entry.get("store_id")))
        except ValueError:
            raise ConfigError(f"{at}: store_id {str(entry.get('store_id'))[:60]!r} is not "
                              "a UUID") from None
        secret, name = entry.get("secret"), entry.get("name") or ""
        state = entry.get("state") or "registered"
        if not isinstance(secret, str) or not secret_ok(secret.strip()):
            raise ConfigError(f"{at} (store {store_id}): the secret must be a string of at "
                              f"least {MIN_SECRET_CHARS} characters")
        if not isinstance(name, str):
            raise ConfigError(f"{at} (store {store_id}): the name must be a string")
        if state not in STATES:
            raise ConfigError(f"{at} (store {store_id}): state {str(state)[:30]!r} is not one "
                              f"of {', '.join(STATES)}")
        if store_id in seen:
            raise ConfigError(f"{at}: store {store_id} is listed twice")
        seen.add(store_id)
        stores.append(Entry(store_id, name, secret.strip(), state))
    return stores


def _view(row: dict | None) -> dict | None:
    """What a diff shows of a store: never its secret or hash."""
    return None if row is None else {"name": row["name"], "enabled": row["active"]}


def apply(conn: psycopg.Connection, entries: list[Entry], *, dry_run: bool = False) -> dict:
    """Write `entries` in one transaction (rolled back when `dry_run`).

    Returns ids by outcome (``created``, ``updated``: name or secret changed; ``enabled``,
    ``disabled``: state changed now), ``unchanged`` (a count), ``inactive`` (stores left
    disabled), ``changed``, and ``before``/``after`` per touched store for a diff, with a
    new secret shown only as ``secret: changed``."""
    outcome: dict = {"created": [], "updated": [], "enabled": [], "disabled": [],
                     "inactive": [], "before": {}, "after": {}}
    unchanged = 0
    with conn.transaction():
        for entry in entries:
            sid = str(entry.store_id)
            row = catalog.get_store(conn, entry.store_id)
            before = _view(row)
            new_secret = row is not None and not catalog.verify_secret(entry.secret,
                                                                       row["secret_hash"])
            result, enabled = catalog.set_store(conn, entry.store_id, entry.name, entry.secret)
            touched = result != "unchanged"
            if result != "unchanged":
                outcome[result].append(sid)
            if entry.state in ("enabled", "disabled"):
                change = (catalog.enable_store if entry.state == "enabled"
                          else catalog.disable_store)
                if change(conn, entry.store_id):
                    outcome[entry.state].append(sid)
                    touched = True
                enabled = entry.state == "enabled"
            if not enabled:
                outcome["inactive"].append(sid)
            if touched:
                after = {"name": entry.name, "enabled": enabled}
                if new_secret:
                    after["secret"] = "changed"
                outcome["before"][sid], outcome["after"][sid] = before, after
            else:
                unchanged += 1
        if dry_run:
            raise psycopg.Rollback()
    outcome["unchanged"] = unchanged
    outcome["changed"] = bool(outcome["after"])
    return outcome
