"""Settings are declared once, as dataclass fields: `load` reads each one from
PHOTO_SYNC_<SIDE>_<FIELD NAME> with the field's own default and bounds. Nothing here needs
a service."""

from __future__ import annotations

import dataclasses

import pytest

from photo_sync.config import ConfigError
from photo_sync.edge.settings import EdgeSettings
from photo_sync.ho.settings import HOSettings

URL = "postgresql:///catalog"


def test_unset_ho_settings_are_the_dataclass_defaults():
    loaded = HOSettings.load(environ={"PHOTO_SYNC_HO_DATABASE_URL": URL}, need_jwt=False,
                             need_s3=False)
    assert dataclasses.asdict(loaded) == dataclasses.asdict(HOSettings(database_url=URL))


def test_unset_edge_settings_are_the_dataclass_defaults():
    loaded = EdgeSettings.load(environ={"PHOTO_SYNC_EDGE_DATABASE_URL": URL}, need_ho=False)
    # Presigned fetches need an origin to check URLs against: off without one.
    wanted = dataclasses.replace(EdgeSettings(database_url=URL), presigned=False)
    assert dataclasses.asdict(loaded) == dataclasses.asdict(wanted)


@pytest.mark.parametrize("cls, prefix, base", [
    (HOSettings, "PHOTO_SYNC_HO_", {"need_jwt": False, "need_s3": False}),
    (EdgeSettings, "PHOTO_SYNC_EDGE_", {"need_ho": False}),
], ids=["ho", "edge"])
def test_every_number_and_switch_is_read_from_its_own_variable(cls, prefix, base):
    """A value set for each int, float and bool field reaches that field, and only it."""
    env = {f"{prefix}DATABASE_URL": URL}
    wanted = {}
    for spec in dataclasses.fields(cls):
        default = spec.default
        if isinstance(default, bool):
            value = not default
            env[prefix + spec.name.upper()] = str(value).lower()
        elif isinstance(default, (int, float)):
            maximum = spec.metadata.get("maximum")
            value = type(default)(default / 2 if maximum else default + 7)
            env[prefix + spec.name.upper()] = str(value)
        else:
            continue
        wanted[spec.name] = value
    if cls is EdgeSettings:  # without an origin, presigned is off whatever it says
        env[f"{prefix}PRESIGNED_ORIGIN"] = "https://s3.example:9000"
    loaded = cls.load(environ=env, **base)
    assert {name: getattr(loaded, name) for name in wanted} == wanted


@pytest.mark.parametrize("cls, variable, value, message, base", [
    (HOSettings, "PHOTO_SYNC_HO_TOKEN_TTL", "59", "below the minimum 60",
     {"need_jwt": False, "need_s3": False}),
    (HOSettings, "PHOTO_SYNC_HO_LOG_LEVEL", "LOUD", "is not one of",
     {"need_jwt": False, "need_s3": False}),
    (EdgeSettings, "PHOTO_SYNC_EDGE_LOCK_TIMEOUT", "0.01", "outside 0.1", {"need_ho": False}),
    (EdgeSettings, "PHOTO_SYNC_EDGE_PRESIGNED", "maybe", "is not true or false",
     {"need_ho": False}),
], ids=["ho-minimum", "ho-check", "edge-minimum", "edge-bool"])
def test_a_bad_value_is_refused_naming_its_variable(cls, variable, value, message, base):
    prefix = variable[:variable.index("_", len("PHOTO_SYNC_")) + 1]
    env = {f"{prefix}DATABASE_URL": URL, variable: value}
    with pytest.raises(ConfigError) as raised:
        cls.load(environ=env, **base)
    assert variable in str(raised.value) and message in str(raised.value)
